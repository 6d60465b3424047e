"""Operators' view of the whole fleet."""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.api.deps import CP, Operator
from control_plane.api.instances import instance_public
from control_plane.schemas import FleetInstancePublic

router = APIRouter(tags=["fleet"])


@router.get("/api/fleet")
async def fleet(cp: CP, _operator: Operator) -> list[FleetInstancePublic]:
    return [
        FleetInstancePublic(
            **instance_public(cp.settings, row).model_dump(),
            owner_id=owner.id,
            owner_email=owner.email,
            pid=row.pid,
            port=row.port,
        )
        for row, owner in await cp.instances.fleet()
    ]
