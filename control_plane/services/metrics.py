"""Chart data: an instance's requests and memory over the last hours (see `metrics.Sampler`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Instance, InstanceSample, utcnow


class MetricsService:
    def __init__(self, db: SessionFactory) -> None:
        self.db = db

    async def series(self, instance: Instance, hours: float) -> Sequence[InstanceSample]:
        """The points of `instance` (already authorized by the caller) of the last `hours`,
        oldest first."""
        since = utcnow() - timedelta(hours=hours)
        async with self.db() as session:
            rows = await session.exec(
                select(InstanceSample)
                .where(InstanceSample.instance_id == instance.id, col(InstanceSample.at) >= since)
                .order_by(col(InstanceSample.at))
            )
            return rows.all()
