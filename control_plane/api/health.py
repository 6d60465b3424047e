"""`GET /api/health` on the apex host."""

from __future__ import annotations

from control_plane.api.routing import api_router

router = api_router("health")


@router.get("/api/health")
async def health() -> dict[str, object]:
    return {"code": 200, "message": "API is healthy.", "data": {}}
