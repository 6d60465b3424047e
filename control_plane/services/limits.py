"""Per-instance limits as the control plane keeps them: disk usage measured and stored, the disk
quota enforced, operators' overrides set — by writing desired state.

- `sweep()`: the periodic job (every `PF_DISK_USAGE_INTERVAL_S`, on the scheduler): measures the
  folder of every running instance (and of any live one never measured), one at a time in a
  worker thread (`control_plane.disk_usage.measure`: lstat only, one filesystem, bounded),
  stores the figure on its row, and wants every instance over its quota `stopped`
  (`desired_by = QUOTA_ACTOR`); the reconciler stops it, with `over its disk quota: 1.2 GB of
  1 GB` as the reason. An owner's or operator's wish written since the measurement wins (the
  update is conditional).
- `check_may_start(instance)`: measures the folder afresh and refuses (409, with the reason) a
  start while the instance is over its quota. Under it again (files removed, a restore, the
  limit raised): the start goes ahead.
- `set_limits(name, update)`: an operator's `max_processes` / `disk_limit_mb` for one instance
  (`null`: the fleet default again). A new process limit restarts a running instance (it is
  applied at start); a new disk limit is checked at once against a fresh measurement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Protocol

import structlog
from sqlalchemy import or_, update
from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Instance, utcnow
from control_plane.disk_usage import DiskUsage, measure
from control_plane.lifecycle import InstanceState
from control_plane.limits import QUOTA_ACTOR, DiskState, disk_state, over_quota_reason
from control_plane.schemas import InstanceLimitsUpdate
from control_plane.services.errors import Conflict, Invalid, NotFound
from control_plane.settings import Settings
from control_plane.specs import instance_layout

log = structlog.get_logger("limits")

LIVE = col(Instance.status) != InstanceState.DELETED.value
# desired states the quota turns into `stopped` (a stopped or deleted instance stays as it is)
_WANTED_UP = ("running", "hibernated")


class Reconcile(Protocol):
    def nudge(self) -> None: ...

    def wait_settled(self, instance_id: str, timeout: float) -> Awaitable[None]: ...


class LimitsService:
    def __init__(self, settings: Settings, db: SessionFactory, reconciler: Reconcile) -> None:
        self.settings = settings
        self.db = db
        self.reconciler = reconciler

    # ----- measuring

    async def measure(self, instance: Instance) -> Instance:
        """Measure `instance`'s folder now and store the figure (on the row and `instance`).
        A folder that does not exist (yet) is left unmeasured."""
        usage = await asyncio.to_thread(self._walk, instance.id)
        if usage is None:
            return instance
        await self._store(instance.id, usage)
        instance.disk_bytes = usage.bytes
        instance.disk_complete = usage.complete
        instance.disk_measured_at = utcnow()
        return instance

    def _walk(self, instance_id: str) -> DiskUsage | None:
        root = instance_layout(self.settings, instance_id).root
        try:
            return measure(root, max_entries=self.settings.disk_usage_max_entries)
        except FileNotFoundError:
            return None
        except OSError as exc:  # not a folder (any more): nothing to trust; the others go on
            log.warning("instance folder not measured", instance=instance_id, error=str(exc))
            return None

    async def _store(self, instance_id: str, usage: DiskUsage) -> None:
        async with self.db() as session:
            await session.exec(
                update(Instance)
                .where(col(Instance.id) == instance_id)
                .values(
                    disk_bytes=usage.bytes, disk_complete=usage.complete, disk_measured_at=utcnow()
                )
            )
            await session.commit()

    # ----- the periodic job

    async def sweep(self) -> list[str]:
        """Measure every running (or never measured) instance and want those over their quota
        stopped; return the names of the instances it stopped. The folders are walked in one
        thread and the figures stored in one transaction: a big fleet's sweep costs one thread
        hop and one commit, not one of each per instance."""
        async with self.db.read() as session:
            rows = (
                await session.exec(
                    select(Instance).where(
                        LIVE,
                        col(Instance.status) != InstanceState.DELETING.value,
                        or_(
                            col(Instance.status) == InstanceState.RUNNING.value,
                            col(Instance.disk_measured_at).is_(None),
                        ),
                    )
                )
            ).all()
        usages = await asyncio.to_thread(lambda: [self._walk(row.id) for row in rows])
        measured = [(row, usage) for row, usage in zip(rows, usages, strict=True) if usage]
        if measured:
            now = utcnow()
            async with self.db() as session:
                for row, usage in measured:
                    await session.exec(
                        update(Instance)
                        .where(col(Instance.id) == row.id)
                        .values(
                            disk_bytes=usage.bytes,
                            disk_complete=usage.complete,
                            disk_measured_at=now,
                        )
                    )
                await session.commit()
            for row, usage in measured:
                row.disk_bytes, row.disk_complete, row.disk_measured_at = (
                    usage.bytes,
                    usage.complete,
                    now,
                )
        over = [row for row in rows if self._must_stop(row)]
        return await self._stop_over_quota(over)

    def _must_stop(self, instance: Instance) -> bool:
        """Over its quota and wanted up. An instance held by an exclusive operation (a restore
        rewriting its folder) is left to it: it is stopped meanwhile, and measured again once
        it runs."""
        return (
            instance.desired in _WANTED_UP
            and instance.hold is None
            and disk_state(self.settings, instance) == DiskState.OVER
        )

    async def _stop_over_quota(self, rows: Sequence[Instance]) -> list[str]:
        """Want `rows` stopped by the quota — unless a wish written since they were read
        says otherwise (conditional update); the reconciler does the stopping."""
        if not rows:
            return []
        async with self.db() as session:
            await session.exec(
                update(Instance)
                .where(
                    col(Instance.id).in_([row.id for row in rows]),
                    col(Instance.desired).in_(_WANTED_UP),
                    col(Instance.hold).is_(None),
                )
                .values(desired="stopped", desired_by=QUOTA_ACTOR)
            )
            await session.commit()
        for row in rows:
            log.warning(
                "instance over its disk quota: stopping it",
                instance=row.id,
                reason=over_quota_reason(self.settings, row),
            )
        self.reconciler.nudge()
        return sorted(row.name or row.former_name for row in rows)

    # ----- starts

    async def check_may_start(self, instance: Instance) -> None:
        """Refuse (409) starting `instance` while its folder is over its quota (measured now:
        a folder cleaned up since the last sweep may start)."""
        current = await self.measure(instance)
        reason = over_quota_reason(self.settings, current)
        if reason is not None:
            raise Conflict(
                f"{current.name} cannot be started: it is {reason}; delete some of its files "
                "or ask an operator to raise its limit"
            )

    # ----- operators' overrides

    async def get(self, name: str) -> tuple[Instance, Account]:
        """A live instance by name, with its owner, whoever owns it (callers are operators)."""
        async with self.db() as session:
            found = (
                await session.exec(
                    select(Instance, Account)
                    .join(Account, col(Account.id) == col(Instance.owner_id))
                    .where(Instance.name == name, LIVE)
                )
            ).first()
        if found is None:
            raise NotFound(f"there is no instance named {name!r}")
        return found[0], found[1]

    async def set_limits(self, name: str, data: InstanceLimitsUpdate) -> tuple[Instance, Account]:
        """Apply an operator's limits to the instance `name`; return it once settled."""
        fields = data.model_fields_set
        if not fields:
            raise Invalid("nothing to change: give max_processes and/or disk_limit_mb")
        instance, _owner = await self.get(name)
        async with self.db() as session:
            row = await session.get(Instance, instance.id)
            if row is None:
                raise NotFound(f"there is no instance named {name!r}")
            if "max_processes" in fields and row.max_processes != data.max_processes:
                row.max_processes = data.max_processes
                row.generation += 1  # applied at start: a running instance restarts
            if "disk_limit_mb" in fields:
                row.disk_limit_mb = data.disk_limit_mb
            session.add(row)
            await session.commit()
        if "disk_limit_mb" in fields:
            measured = await self.measure(row)
            if self._must_stop(measured):
                await self._stop_over_quota([measured])
        self.reconciler.nudge()
        await self.reconciler.wait_settled(instance.id, self.settings.start_timeout_s)
        return await self.get(name)
