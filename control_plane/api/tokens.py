"""Named API tokens for scripts and the CLI: shown once, revocable.

`POST /api/tokens {name, scope?, instances?}`: scope "full" (the default) or "deploy" (CI:
deploys of the listed instances, or of all the account's, and nothing else); `instances`
only with scope deploy, names of the caller's own instances (422, field "instances", for
any other name). Only full tokens and sessions may call these routes (`CurrentAccount`), so
no token makes a token of wider power than its own.
"""

from __future__ import annotations

from fastapi import Response, status

from control_plane.api.deps import CP, CurrentAccount
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.schemas import TokenCreate, TokenCreated, TokenPublic

router = api_router("tokens", 401, 403)


@router.get("/api/tokens")
async def list_tokens(cp: CP, account: CurrentAccount) -> list[TokenPublic]:
    return await cp.auth.public(await cp.auth.list_api_tokens(account))


@router.post("/api/tokens", status_code=status.HTTP_201_CREATED)
async def create_token(cp: CP, account: CurrentAccount, data: TokenCreate) -> TokenCreated:
    token, row = await cp.auth.create_api_token(account, data)
    [public] = await cp.auth.public([row])
    return TokenCreated(**public.model_dump(), token=token)


@router.delete(
    "/api/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def revoke_token(cp: CP, account: CurrentAccount, token_id: str) -> Response:
    await cp.auth.revoke(account, token_id, kind="api")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
