"""Operators' view of the whole fleet, and their per-instance limits.

- `GET /api/fleet`: every live instance with its owner, pid, port, disk usage and limits.
- `GET /api/fleet/instances/{name}`: one of them (whoever owns it).
- `PATCH /api/fleet/instances/{name}` `{"max_processes": N, "disk_limit_mb": N}`: override the
  fleet defaults for one instance (`null`: the default again; `disk_limit_mb` 0: no quota).
  Owners get 403 (limits are the operator's to give), values out of range 422.
"""

from __future__ import annotations

from control_plane.api.deps import CP, Operator
from control_plane.api.errors import error_responses
from control_plane.api.instances import instance_public
from control_plane.api.routing import api_router
from control_plane.db.models import Account, Instance
from control_plane.schemas import FleetInstancePublic, InstanceLimitsUpdate
from control_plane.settings import Settings

router = api_router("fleet", 401, 403)


def fleet_public(settings: Settings, row: Instance, owner: Account) -> FleetInstancePublic:
    return FleetInstancePublic(
        **instance_public(settings, row).model_dump(),
        owner_id=owner.id,
        owner_email=owner.email,
        pid=row.pid,
        port=row.port,
        max_processes_override=row.max_processes,
        disk_limit_mb_override=row.disk_limit_mb,
    )


@router.get("/api/fleet")
async def fleet(cp: CP, _operator: Operator) -> list[FleetInstancePublic]:
    return [fleet_public(cp.settings, row, owner) for row, owner in await cp.instances.fleet()]


@router.get("/api/fleet/instances/{name}", responses=error_responses(404))
async def fleet_instance(cp: CP, _operator: Operator, name: str) -> FleetInstancePublic:
    return fleet_public(cp.settings, *await cp.instances.limits.get(name))


@router.patch("/api/fleet/instances/{name}", responses=error_responses(404))
async def set_instance_limits(
    cp: CP, _operator: Operator, name: str, data: InstanceLimitsUpdate
) -> FleetInstancePublic:
    return fleet_public(cp.settings, *await cp.instances.limits.set_limits(name, data))
