"""Dependencies shared by the API modules: the control plane and the calling account.

A bearer token has a scope (`control_plane.services.auth`): sessions and full API tokens may
do all their account may; a deploy token (for CI) only what the routes taking `DeployAccount`
do, on the instances it opens.

- `CurrentAccount` (and `Credentials`, `Operator`): full tokens and sessions; a deploy token
  is refused with 403.
- `DeployAccount`: for the routes of one instance, `/api/instances/{name}/...`, that a deploy
  token may use (deploys, reading the instance): full tokens and sessions as
  `CurrentAccount`; a deploy token only when `name` is one of the instances it opens, else
  404 in the very words an unknown instance gets, so another instance's existence does not
  leak. The route still checks ownership itself (`cp.instances.get`): this only narrows.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from control_plane.context import ControlPlane
from control_plane.db.models import Account, ApiToken
from control_plane.services.auth import DEPLOY, FULL
from control_plane.services.errors import Forbidden, NotFound, Unauthorized

_bearer = HTTPBearer(auto_error=False, description="a session token or an API token")

DEPLOY_ONLY = "this token may only deploy (scope deploy)"


def get_cp(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


CP = Annotated[ControlPlane, Depends(get_cp)]


async def get_any_credentials(
    cp: CP, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> tuple[Account, ApiToken]:
    """The account and token of a valid bearer token, whatever its scope."""
    if creds is None:
        raise Unauthorized("send `Authorization: Bearer TOKEN` (POST /api/sessions gives one)")
    return await cp.auth.authenticate(creds.credentials)


AnyCredentials = Annotated[tuple[Account, ApiToken], Depends(get_any_credentials)]


async def get_credentials(credentials: AnyCredentials) -> tuple[Account, ApiToken]:
    """A full token or a session; 403 for any narrower scope."""
    if credentials[1].scope != FULL:
        raise Forbidden(DEPLOY_ONLY)
    return credentials


Credentials = Annotated[tuple[Account, ApiToken], Depends(get_credentials)]


async def get_account(credentials: Credentials) -> Account:
    return credentials[0]


CurrentAccount = Annotated[Account, Depends(get_account)]


async def get_deploy_account(cp: CP, request: Request, credentials: AnyCredentials) -> Account:
    """The caller of a route of the instance `{name}` that deploy tokens may use."""
    account, token = credentials
    if token.scope == FULL:
        return account
    name = request.path_params.get("name")
    if token.scope != DEPLOY or not isinstance(name, str):  # not a route of one instance
        raise Forbidden(DEPLOY_ONLY)
    if not await cp.auth.token_opens(account, token, name):
        raise NotFound(f"you have no instance named {name!r}")  # as `cp.instances.get` says
    return account


DeployAccount = Annotated[Account, Depends(get_deploy_account)]


async def get_operator(account: CurrentAccount) -> Account:
    if not account.is_operator:
        raise Forbidden("only operators may do this")
    return account


Operator = Annotated[Account, Depends(get_operator)]


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"
