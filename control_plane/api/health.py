"""`GET /api/health` on the apex host."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["health"])


@router.get("/api/health")
async def health() -> dict[str, object]:
    return {"code": 200, "message": "API is healthy.", "data": {}}
