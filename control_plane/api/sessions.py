"""Logging in and out: session tokens."""

from __future__ import annotations

from fastapi import Request, Response, status

from control_plane.api.deps import CP, AnyCredentials, client_ip
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.schemas import SessionCreate, SessionPublic

router = api_router("sessions", 401, 403)  # 403: a suspended account


@router.post("/api/sessions", responses=error_responses(429))
async def log_in(cp: CP, data: SessionCreate, request: Request) -> SessionPublic:
    """A session token; 401 for wrong credentials, 429 (with `Retry-After`) after repeated
    failures of this email from this client address, or from this address overall. The
    address is the real client's (`control_plane.api.client_address`)."""
    token, row = await cp.auth.log_in(data.email, data.password, client_ip(request))
    return SessionPublic(token=token, expires=row.expires_at)


@router.delete("/api/sessions/current", status_code=status.HTTP_204_NO_CONTENT)
async def log_out(cp: CP, credentials: AnyCredentials) -> Response:
    """Revoke the token this request carries (a session, or any API token: a deploy token
    may end itself)."""
    account, token = credentials
    await cp.auth.revoke(account, token.id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
