"""Named API tokens for scripts and the CLI: shown once, revocable."""

from __future__ import annotations

from fastapi import Response, status

from control_plane.api.deps import CP, CurrentAccount
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.db.models import ApiToken
from control_plane.schemas import TokenCreate, TokenCreated, TokenPublic

router = api_router("tokens", 401, 403)


def token_public(row: ApiToken) -> TokenPublic:
    return TokenPublic(
        id=row.id, name=row.name, prefix=row.prefix, created=row.created_at,
        last_used=row.last_used_at,
    )  # fmt: skip


@router.get("/api/tokens")
async def list_tokens(cp: CP, account: CurrentAccount) -> list[TokenPublic]:
    return [token_public(row) for row in await cp.auth.list_api_tokens(account)]


@router.post("/api/tokens", status_code=status.HTTP_201_CREATED)
async def create_token(cp: CP, account: CurrentAccount, data: TokenCreate) -> TokenCreated:
    token, row = await cp.auth.create_api_token(account, data.name)
    return TokenCreated(**token_public(row).model_dump(), token=token)


@router.delete(
    "/api/tokens/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(404),
)
async def revoke_token(cp: CP, account: CurrentAccount, token_id: str) -> Response:
    await cp.auth.revoke(account, token_id, kind="api")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
