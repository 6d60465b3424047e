"""Sampling the fleet: the reconciler's pass, every `PF_SAMPLE_INTERVAL_S`, records each
instance's memory and last request (`FleetSampler.sample`), and turns the proxy's request
counters and the driver's memory figures into chart points (`InstanceSample` rows, one per
instance every `PF_METRICS_INTERVAL_S`; `Sampler`)."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Instance, InstanceSample, utcnow
from control_plane.drivers.base import Driver
from control_plane.engines.registry import EngineRegistry
from control_plane.lifecycle import InstanceState
from control_plane.settings import Settings
from control_plane.specs import spec_for
from proxy.activity import ActivityTracker, HostActivity

# An idle running instance's memory is measured every this many samples (one with requests
# since the last sample, at every sample).
IDLE_SAMPLE_EVERY = 6


class Sampler:
    """Decides when a chart point is due and counts requests between two points.

    The proxy's counters only grow (from the start of `serve`); a point holds the difference
    from the previous point of the same host, so a restart of `serve` costs at most one point.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._counts: dict[str, int] = {}
        self._last = 0.0

    def due(self) -> bool:
        """True (once per interval) when the current sampling pass should keep points."""
        now = time.monotonic()
        if now - self._last < self.settings.metrics_interval_s:
            return False
        self._last = now
        return True

    def point(self, instance: Instance, seen: HostActivity | None) -> InstanceSample:
        host = self.settings.instance_host(instance.name or instance.former_name)
        total = seen.requests if seen else 0
        requests = max(0, total - self._counts.get(host, 0))
        self._counts[host] = total
        return InstanceSample(
            instance_id=instance.id, requests=requests, memory_bytes=instance.memory_bytes
        )

    async def prune(self, session: AsyncSession) -> None:
        """Delete points older than the retention (the caller commits)."""
        cutoff = utcnow() - timedelta(hours=self.settings.metrics_retention_h)
        await session.exec(delete(InstanceSample).where(col(InstanceSample.at) < cutoff))


class FleetSampler:
    """The sampling pass over the fleet (see `sample`)."""

    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        engines: EngineRegistry,
        driver: Driver,
        activity: ActivityTracker,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engines = engines
        self.driver = driver
        self.activity = activity
        self.points = Sampler(settings)
        self._measured: dict[str, tuple[int, float]] = {}  # instance id -> (pid, when)
        self._sampled_since = 0.0  # activity newer than this is not recorded yet

    async def sample(self) -> None:
        """Record memory and last-request times (and, when due, chart points); cap logs.

        The rows are read on a reader and the changes written in one short transaction
        after every measurement: no session stays open while processes are measured. A
        running instance is measured (its smaps_rollup read, its log capped) when it had
        requests since the last pass, when its process is new to the sampler, or else once
        every `IDLE_SAMPLE_EVERY` samples: an idle instance's memory barely moves, and its
        log does not grow."""
        activity = self.activity.snapshot()
        keep_points = self.points.due()
        since, self._sampled_since = self._sampled_since, time.time()
        suffix = "." + self.settings.domain
        active = {
            host.removesuffix(suffix)
            for host, seen in activity.items()
            if seen.last_request_at >= since and host.endswith(suffix)
        }
        # instances that run, ran until lately, or had requests since the last pass: the
        # others (asleep or stopped, and quiet) have nothing new to record
        query = select(Instance).where(
            col(Instance.status) != InstanceState.DELETED.value,
            or_(
                col(Instance.pid).is_not(None),
                col(Instance.memory_bytes).is_not(None),
                col(Instance.name).in_(active),
            ),
        )
        async with self.db.read() as session:
            rows = (await session.exec(query)).all()
        now = time.monotonic()
        idle_every = self.settings.sample_interval_s * IDLE_SAMPLE_EVERY
        changes: dict[str, tuple[int | None, dict[str, object]]] = {}
        measured: dict[str, tuple[int, float]] = {}
        kept: list[tuple[Instance, HostActivity | None]] = []
        for row in rows:
            if not row.name or row.port is None:
                continue
            seen = activity.get(self.settings.instance_host(row.name))
            kept.append((row, seen))
            fields: dict[str, object] = {}
            if seen and seen.last_request_at:
                last = datetime.fromtimestamp(seen.last_request_at, tz=row.created_at.tzinfo)
                if row.last_request_at is None or last > row.last_request_at:
                    fields["last_request_at"] = row.last_request_at = last
            if row.pid:  # nothing to measure or cap of a sleeping or stopped instance
                before = self._measured.get(row.id)
                if (
                    before is None
                    or before[0] != row.pid
                    or row.name in active
                    or (now - before[1] >= idle_every)
                ):
                    spec = spec_for(self.settings, self.engines, row)
                    stats = await self.driver.stats(spec, row.pid)
                    await asyncio.to_thread(self.driver.cap_log, spec)
                    memory = stats.memory_bytes if stats else None
                    measured[row.id] = (row.pid, now)
                    if memory != row.memory_bytes:
                        fields["memory_bytes"] = row.memory_bytes = memory
            elif row.memory_bytes is not None:
                fields["memory_bytes"] = row.memory_bytes = None
            if fields:
                changes[row.id] = (row.pid, fields)
        self._measured = {
            row.id: measured.get(row.id) or self._measured[row.id]
            for row, _ in kept
            if row.pid and (row.id in measured or row.id in self._measured)
        }
        if not changes and not keep_points:
            return
        async with self.db() as session:
            for instance_id, (pid, fields) in changes.items():
                same = col(Instance.pid).is_(None) if pid is None else col(Instance.pid) == pid
                # (a process started or stopped since the read: the next pass records it)
                await session.exec(
                    update(Instance).where(col(Instance.id) == instance_id, same).values(**fields)
                )
            if keep_points:
                session.add_all(self.points.point(row, seen) for row, seen in kept)
                await self.points.prune(session)
            await session.commit()
