"""Dependencies shared by the API modules: the control plane and the calling account."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control_plane.context import ControlPlane
from control_plane.db.models import Account, ApiToken
from control_plane.services.errors import Forbidden, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="a session token or an API token")


def get_cp(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


CP = Annotated[ControlPlane, Depends(get_cp)]


async def get_credentials(
    cp: CP, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> tuple[Account, ApiToken]:
    if creds is None:
        raise Unauthorized("send `Authorization: Bearer TOKEN` (POST /api/sessions gives one)")
    return await cp.auth.authenticate(creds.credentials)


Credentials = Annotated[tuple[Account, ApiToken], Depends(get_credentials)]


async def get_account(credentials: Credentials) -> Account:
    return credentials[0]


CurrentAccount = Annotated[Account, Depends(get_account)]


async def get_operator(account: CurrentAccount) -> Account:
    if not account.is_operator:
        raise Forbidden("only operators may do this")
    return account


Operator = Annotated[Account, Depends(get_operator)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
