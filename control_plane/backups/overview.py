"""The operators' view of the fleet's backups: per instance the last good snapshot, the
replication lag (seconds since Litestream last confirmed the replica up to date), whether
a snapshot is overdue (not taken, nor found unchanged, within its schedule + a grace), and the
outcome of the last restore drill of its replica.

Cost: a fixed number of queries whatever the fleet's size (the instances, their backup
states, and the newest good and failed snapshot of every instance in one query,
`newest_snapshots`), one `/list` per Litestream process, and per instance a look-up of its
snapshot job's next run in the scheduler's memory (`Scheduler.next_run_time`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlmodel import col

from control_plane.backups.models import BackupSnapshot
from control_plane.backups.schemas import FleetBackupPublic
from control_plane.db.engine import SessionFactory
from control_plane.db.models import utcnow

if TYPE_CHECKING:
    from control_plane.backups.service import BackupService


@dataclass(frozen=True)
class Newest:
    """The newest snapshot of one instance with one status."""

    id: str
    created_at: datetime
    reason: str


async def newest_snapshots(db: SessionFactory) -> dict[tuple[str, str], Newest]:
    """(instance id, `good` | `failed`) -> the newest snapshot of the instance with that
    status (by `created_at`, then id), for every instance that has one: one query."""
    rank = (
        sa.func.row_number()
        .over(
            partition_by=(col(BackupSnapshot.instance_id), col(BackupSnapshot.status)),
            order_by=(col(BackupSnapshot.created_at).desc(), col(BackupSnapshot.id).desc()),
        )
        .label("rank")
    )
    ranked = (
        sa.select(
            col(BackupSnapshot.instance_id),
            col(BackupSnapshot.status),
            col(BackupSnapshot.id),
            col(BackupSnapshot.created_at),
            col(BackupSnapshot.reason),
            rank,
        )
        .where(col(BackupSnapshot.status).in_(("good", "failed")))
        .subquery()
    )
    query = sa.select(
        ranked.c.instance_id, ranked.c.status, ranked.c.id, ranked.c.created_at, ranked.c.reason
    ).where(ranked.c.rank == 1)
    async with db.read() as session:
        rows = (await session.execute(query)).all()
    return {
        (key, status): Newest(id_, created, reason) for key, status, id_, created, reason in rows
    }


async def fleet_overview(service: BackupService) -> list[FleetBackupPublic]:
    now = utcnow()
    status = await service.replication.status()
    states = await service.states()
    newest = await newest_snapshots(service.db)
    result: list[FleetBackupPublic] = []
    for instance, owner in await service.instances.fleet():
        good = newest.get((instance.id, "good"))
        failure = newest.get((instance.id, "failed"))
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
