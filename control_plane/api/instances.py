"""A user's instances: create, list, view, change, start/stop, env, logs, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Response, status

from control_plane.api.deps import CP, CurrentAccount, DeployAccount, Operator
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.db.models import Instance, utcnow
from control_plane.lifecycle import InstanceState
from control_plane.limits import disk_limit_mb_of, disk_state, max_processes_of
from control_plane.nodes.schemas import MovePublic, MoveRequest
from control_plane.schemas import (
    EnvPublic,
    EnvUpdate,
    InstanceCreate,
    InstancePublic,
    InstanceUpdate,
    LogsPublic,
)
from control_plane.services.moves import MoveService
from control_plane.settings import Settings

# 403: a suspended account; on create, over the account's quota
router = api_router("instances", 401, 403)
NOT_FOUND = error_responses(404)


def instance_public(settings: Settings, row: Instance) -> InstancePublic:
    name = row.name or row.former_name
    asleep = row.hibernated_at if row.status == InstanceState.HIBERNATED else None
    return InstancePublic(
        id=row.id,
        name=name,
        url=settings.instance_url(name),
        status=row.status,
        status_reason=row.status_reason,
        desired=row.desired,
        engine=row.engine,
        version=row.version,
        created=row.created_at,
        started=row.started_at,
        last_request=row.last_request_at,
        memory_bytes=row.memory_bytes,
        idle_timeout_s=row.idle_timeout_s,
        hibernated_at=asleep,
        asleep_s=None if asleep is None else max(0, int((utcnow() - asleep).total_seconds())),
        disk_bytes=row.disk_bytes,
        disk_measured=row.disk_measured_at,
        disk_limit_mb=disk_limit_mb_of(settings, row),
        disk_state=disk_state(settings, row).value,
        max_processes=max_processes_of(settings, row),
    )


@router.post("/api/instances", status_code=status.HTTP_201_CREATED, responses=error_responses(409))
async def create_instance(cp: CP, account: CurrentAccount, data: InstanceCreate) -> InstancePublic:
    return instance_public(cp.settings, await cp.instances.create(account, data))


@router.get("/api/instances")
async def list_instances(cp: CP, account: CurrentAccount) -> list[InstancePublic]:
    return [instance_public(cp.settings, row) for row in await cp.instances.list_owned(account)]


@router.get("/api/instances/{name}", responses=NOT_FOUND)
async def get_instance(cp: CP, account: DeployAccount, name: str) -> InstancePublic:
    return instance_public(cp.settings, await cp.instances.get(account, name))


@router.patch("/api/instances/{name}", responses=NOT_FOUND)
async def update_instance(
    cp: CP, account: CurrentAccount, name: str, data: InstanceUpdate
) -> InstancePublic:
    return instance_public(cp.settings, await cp.instances.update(account, name, data))


@router.post("/api/instances/{name}/start", responses=error_responses(404, 409))
async def start_instance(cp: CP, account: CurrentAccount, name: str) -> InstancePublic:
    return instance_public(cp.settings, await cp.instances.start(account, name))


@router.post("/api/instances/{name}/stop", responses=NOT_FOUND)
async def stop_instance(cp: CP, account: CurrentAccount, name: str) -> InstancePublic:
    return instance_public(cp.settings, await cp.instances.stop(account, name))


@router.post("/api/instances/{name}/move", responses=error_responses(404, 409, 422, 503))
async def move_instance(cp: CP, _operator: Operator, name: str, data: MoveRequest) -> MovePublic:
    """Operators: move the instance to another node (stopped, re-pinned, started there);
    says how long it was unreachable (`control_plane.services.moves`)."""
    moves = MoveService(cp.settings, cp.db, cp.engines, cp.driver, cp.reconciler)
    return await moves.move(name, data.node)


@router.post("/api/instances/{name}/admin-link", responses=error_responses(404, 409, 503))
async def admin_link(cp: CP, account: CurrentAccount, name: str) -> dict[str, str]:
    """A single-use link, valid for a minute, that opens the admin UI signed in."""
    return {"url": await cp.admin_access.admin_link(account, name)}


@router.get("/api/instances/{name}/env", responses=NOT_FOUND)
async def get_env(cp: CP, account: CurrentAccount, name: str) -> EnvPublic:
    """The variables, masked (no character of a value is ever returned)."""
    return EnvPublic(vars=cp.instances.env_public(await cp.instances.get(account, name)))


@router.put("/api/instances/{name}/env", responses=NOT_FOUND)
async def put_env(cp: CP, account: CurrentAccount, name: str, data: EnvUpdate) -> EnvPublic:
    """Replace the variables; 422 naming each refused name or value and why (nothing stored).
    Values are sealed at rest; the instance restarts with them."""
    row = await cp.instances.set_env(account, name, data.vars)
    return EnvPublic(vars=cp.instances.env_public(row))


@router.get("/api/instances/{name}/logs", responses=NOT_FOUND)
async def get_logs(
    cp: CP,
    account: CurrentAccount,
    name: str,
    tail: Annotated[int, Query(ge=1, le=5000)] = 100,
) -> LogsPublic:
    return LogsPublic(lines=await cp.instances.logs(account, name, tail))


@router.delete("/api/instances/{name}", status_code=status.HTTP_204_NO_CONTENT, responses=NOT_FOUND)
async def delete_instance(
    cp: CP, account: CurrentAccount, name: str, purge: bool = False
) -> Response:
    await cp.instances.delete(account, name, purge=purge)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
