"""Hibernate and wake an instance on demand (owners, and operators for any instance)."""

from __future__ import annotations

from control_plane.api.deps import CP, CurrentAccount
from control_plane.api.instances import instance_public
from control_plane.api.routing import api_router
from control_plane.schemas import InstancePublic

router = api_router("instances", 401, 403, 404, 409)


@router.post("/api/instances/{name}/hibernate")
async def hibernate_instance(cp: CP, account: CurrentAccount, name: str) -> InstancePublic:
    """Stop a running instance until its next request (409 unless it runs or sleeps)."""
    return instance_public(cp.settings, await cp.hibernation.hibernate(account, name))


@router.post("/api/instances/{name}/wake")
async def wake_instance(cp: CP, account: CurrentAccount, name: str) -> InstancePublic:
    """Start a hibernated instance now (409 unless it sleeps or runs)."""
    return instance_public(cp.settings, await cp.hibernation.wake(account, name))
