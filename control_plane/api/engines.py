"""Engines and their installed versions; operators install more."""

from __future__ import annotations

from fastapi import status

from control_plane.api.deps import CP, CurrentAccount, Operator
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.schemas import EngineInstall, EnginePublic

router = api_router("engines", 401, 403)


@router.get("/api/engines")
async def list_engines(cp: CP, _account: CurrentAccount) -> list[EnginePublic]:
    return cp.engine_admin.list_engines()


@router.post("/api/engines", status_code=status.HTTP_201_CREATED, responses=error_responses(404))
async def install_engine(cp: CP, _operator: Operator, data: EngineInstall) -> EnginePublic:
    return await cp.engine_admin.install(data.engine, data.version)
