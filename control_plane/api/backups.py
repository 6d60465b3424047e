"""Backups of an instance: list, snapshot now, download, restore, delete, schedule; and the
operators' overview of the fleet's backups."""

from __future__ import annotations

from fastapi import Response, status
from fastapi.responses import StreamingResponse

from control_plane.api.deps import CP, CurrentAccount, Operator
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.backups.drills import DrillOutcome, last_drill
from control_plane.backups.models import BackupRestore, BackupSnapshot
from control_plane.backups.schemas import (
    BackupsPublic,
    DrillPublic,
    FleetBackupPublic,
    RestoreAt,
    RestorePublic,
    SchedulePublic,
    ScheduleUpdate,
    SnapshotPublic,
)

router = api_router("backups", 401, 403)
NOT_FOUND = error_responses(404)  # no such instance (or backup) of the caller's
BUSY = error_responses(404, 409)  # 409: another operation holds the instance, or the wrong state
STORE = error_responses(404, 409, 502)  # 502: the backup store failed


def snapshot_public(row: BackupSnapshot) -> SnapshotPublic:
    return SnapshotPublic(
        id=row.id,
        status=row.status,
        size=row.size,
        created=row.created_at,
        finished=row.finished_at,
        trigger=row.trigger,
        engine=row.engine,
        version=row.version,
        sha256=row.sha256,
        reason=row.reason,
    )


def restore_public(row: BackupRestore) -> RestorePublic:
    return RestorePublic(
        id=row.id,
        status=row.status,
        phase=row.phase,
        snapshot_id=row.snapshot_id,
        point_in_time=row.point_in_time,
        restored_to=row.restored_to,
        reason=row.reason,
        safety_copy=row.safety_copy,
        created=row.created_at,
        finished=row.finished_at,
    )


def drill_public(outcome: DrillOutcome) -> DrillPublic:
    return DrillPublic(
        status=outcome.status,
        problem=outcome.problem,
        at=outcome.at,
        seconds=round(outcome.seconds, 3),
        generation=outcome.generation,
    )


@router.get("/api/instances/{name}/backups", responses=NOT_FOUND)
async def list_backups(cp: CP, account: CurrentAccount, name: str) -> BackupsPublic:
    instance = await cp.instances.get(account, name)
    rows = await cp.backups.snapshots(instance.id)
    start, end = await cp.backups.replicas.window(instance)
    state = await cp.backups.state_of(instance.id)
    return BackupsPublic(
        snapshots=[snapshot_public(row) for row in rows],
        restorable_from=start,
        restorable_to=end,
        schedule=await cp.backups.schedule_public(instance),
        store=cp.backups.store.kind,
        replica_generation=state.replica_generation if state else 0,
        drill=drill_public(last) if (last := last_drill(state)) else None,
    )


@router.post("/api/instances/{name}/backups/drill", responses=BUSY)
async def drill_replica(cp: CP, account: CurrentAccount, name: str) -> DrillPublic:
    """Rebuild the instance's replica now and check it (the instance is not touched)."""
    return drill_public(await cp.backups.drills.drill_now(account, name))


@router.post("/api/instances/{name}/backups", status_code=status.HTTP_201_CREATED, responses=STORE)
async def create_backup(cp: CP, account: CurrentAccount, name: str) -> SnapshotPublic:
    return snapshot_public(await cp.backups.create(account, name))


@router.get("/api/instances/{name}/backups/schedule", responses=NOT_FOUND)
async def get_schedule(cp: CP, account: CurrentAccount, name: str) -> SchedulePublic:
    return await cp.backups.schedule_public(await cp.instances.get(account, name))


@router.put("/api/instances/{name}/backups/schedule", responses=NOT_FOUND)
async def put_schedule(
    cp: CP, account: CurrentAccount, name: str, data: ScheduleUpdate
) -> SchedulePublic:
    return await cp.backups.set_schedule(account, name, data.schedule)


@router.get(
    "/api/instances/{name}/backups/{backup_id}/download",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The snapshot's archive (`NAME-STAMP-ID.tar.gz`)",
            "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
        },
        **BUSY,
    },
)
async def download_backup(
    cp: CP, account: CurrentAccount, name: str, backup_id: str
) -> StreamingResponse:
    filename, size, content = await cp.backups.download(account, name, backup_id)
    return StreamingResponse(
        content,
        media_type="application/gzip",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(size),
        },
    )


@router.post("/api/instances/{name}/backups/{backup_id}/restore", responses=STORE)
async def restore_backup(
    cp: CP, account: CurrentAccount, name: str, backup_id: str
) -> RestorePublic:
    return restore_public(await cp.backups.restorer.from_snapshot(account, name, backup_id))


@router.post("/api/instances/{name}/restore", responses=STORE)
async def restore_point_in_time(
    cp: CP, account: CurrentAccount, name: str, data: RestoreAt
) -> RestorePublic:
    return restore_public(await cp.backups.restorer.to_point(account, name, data.at))


@router.delete("/api/instances/{name}/backups/{backup_id}", status_code=204, responses=STORE)
async def delete_backup(
    cp: CP, account: CurrentAccount, name: str, backup_id: str, force: bool = False
) -> Response:
    await cp.backups.delete(account, name, backup_id, force=force)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/fleet/backups")
async def fleet_backups(cp: CP, _operator: Operator) -> list[FleetBackupPublic]:
    return await cp.backups.fleet()
