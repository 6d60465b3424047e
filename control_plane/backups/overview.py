"""The operators' view of the fleet's backups: per instance the last good snapshot, the
replication lag (seconds since Litestream last confirmed the replica up to date), whether
a snapshot is overdue (not taken, nor found unchanged, within its schedule + a grace), and the
outcome of the last restore drill of its replica."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from control_plane.backups.schemas import FleetBackupPublic
from control_plane.db.models import utcnow

if TYPE_CHECKING:
    from control_plane.backups.service import BackupService


async def fleet_overview(service: BackupService) -> list[FleetBackupPublic]:
    now = utcnow()
    status = await service.replication.status()
    states = await service.states()
    result: list[FleetBackupPublic] = []
    for instance, owner in await service.instances.fleet():
        rows = await service.snapshots(instance.id)
        good = next((r for r in rows if r.status == "good"), None)
        failure = next((r for r in rows if r.status == "failed"), None)
        if failure and good and failure.created_at < good.created_at:
            failure = None
        state = states.get(instance.id)
        schedule = service.schedule_of(instance, state)
        since = max(
            [t for t in (good and good.created_at, state and state.last_checked_at) if t]
            or [instance.created_at]
        )
        due = schedule.next_after(since)
        overdue = now > due + timedelta(seconds=service.settings.backup_overdue_grace_s)
        lag: float | None = None
        dbs = service.databases(instance)
        seen = status.get(str(dbs[0].path)) if dbs else None
        if seen is not None and instance.id in service.pauses.paused:
            lag = 0.0  # paused once it stopped, after a last sync (control_plane.backups.pauses)
        elif seen is not None and seen.last_sync_at is not None:
            lag = max(0.0, (now - seen.last_sync_at).total_seconds())
        result.append(
            FleetBackupPublic(
                instance_id=instance.id,
                name=instance.name or instance.former_name,
                owner_email=owner.email,
                status=instance.status,
                schedule=schedule.text,
                last_good_id=good.id if good else None,
                last_good_at=good.created_at if good else None,
                last_failure=failure.reason if failure else None,
                replication_lag_s=lag,
                overdue=overdue,
                next_run=service.next_run(instance.id),
                replica_generation=state.replica_generation if state else 0,
                drill_status=state.drill_status if state else None,
                drill_at=state.drill_at if state else None,
                drill_problem=state.drill_problem if state else "",
            )
        )
    return result
