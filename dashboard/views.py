"""What pages show of an instance: its row of the control DB as plain values for templates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from control_plane.db.models import Instance
from control_plane.lifecycle import InstanceState
from control_plane.limits import MB, disk_limit_mb_of, disk_state
from control_plane.settings import Settings

# States in which the page keeps polling quickly: something is about to change.
MOVING = frozenset({InstanceState.PROVISIONING.value, InstanceState.DELETING.value})


@dataclass(frozen=True)
class InstanceView:
    name: str
    url: str
    host: str
    status: str
    reason: str
    desired: str
    engine: str
    version: str
    created: datetime
    started: datetime | None
    last_request: datetime | None
    memory_bytes: int | None
    env_count: int
    # disk (control_plane.limits): last measured usage, the quota (None: none) and its state
    disk_bytes: int | None = None
    disk_limit_bytes: int | None = None
    disk_state: str = "unknown"

    @property
    def disk_percent(self) -> int | None:
        if self.disk_bytes is None or not self.disk_limit_bytes:
            return None
        return round(100 * self.disk_bytes / self.disk_limit_bytes)

    @property
    def running(self) -> bool:
        return self.status == InstanceState.RUNNING.value

    @property
    def moving(self) -> bool:
        return self.status in MOVING

    @property
    def startable(self) -> bool:
        return self.status in ("stopped", "failed") or self.desired == "stopped"

    @property
    def uptime_s(self) -> float | None:
        if not self.running or self.started is None:
            return None
        return (datetime.now(UTC) - self.started).total_seconds()


def instance_view(settings: Settings, row: Instance) -> InstanceView:
    name = row.name or row.former_name
    limit_mb = disk_limit_mb_of(settings, row)
    return InstanceView(
        name=name,
        url=settings.instance_url(name),
        host=settings.instance_url(name).split("://", 1)[1],
        status=row.status,
        reason=row.status_reason,
        desired=row.desired,
        engine=row.engine,
        version=row.version,
        created=row.created_at,
        started=row.started_at,
        last_request=row.last_request_at,
        memory_bytes=row.memory_bytes,
        env_count=len(row.env),
        disk_bytes=row.disk_bytes,
        disk_limit_bytes=None if limit_mb is None else limit_mb * MB,
        disk_state=disk_state(settings, row).value,
    )
