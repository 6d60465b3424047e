"""Chart points: the reconciler's sampling turns the proxy's request counters and the driver's
memory figures into `InstanceSample` rows, one per instance every `PF_METRICS_INTERVAL_S`."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from control_plane.db.models import Instance, InstanceSample, utcnow
from control_plane.settings import Settings
from proxy.activity import HostActivity


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
