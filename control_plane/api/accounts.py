"""Accounts: sign up, who am I, and (operators) suspend, resume, invite."""

from __future__ import annotations

from fastapi import Response, status

from control_plane.api.deps import CP, Credentials, CurrentAccount, Operator
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.db.models import Account
from control_plane.schemas import AccountCreate, AccountPublic, InviteCreated, PasswordChange

# 403: sign-up closed or without its invite; a suspended account; not an operator
router = api_router("accounts", 403)
SIGNED_IN = error_responses(401)


def account_public(account: Account) -> AccountPublic:
    return AccountPublic(
        id=account.id,
        email=account.email,
        is_operator=account.is_operator,
        suspended=account.suspended_at is not None,
        created=account.created_at,
    )


@router.post("/api/accounts", status_code=status.HTTP_201_CREATED, responses=error_responses(409))
async def sign_up(cp: CP, data: AccountCreate) -> AccountPublic:
    return account_public(await cp.accounts.sign_up(data.email, data.password, data.invite))


@router.get("/api/accounts/me", responses=SIGNED_IN)
async def me(account: CurrentAccount) -> AccountPublic:
    return account_public(account)


@router.post(
    "/api/accounts/me/password", status_code=status.HTTP_204_NO_CONTENT, responses=SIGNED_IN
)
async def change_password(cp: CP, credentials: Credentials, data: PasswordChange) -> Response:
    """Other login sessions end; the one making this call and API tokens stay valid."""
    account, token = credentials
    await cp.auth.change_password(
        account, data.current_password, data.new_password, keep_session=token.id
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/accounts", responses=SIGNED_IN)
async def list_accounts(cp: CP, _operator: Operator) -> list[AccountPublic]:
    return [account_public(a) for a in await cp.accounts.list_accounts()]


@router.post("/api/accounts/{account_id}/suspend", responses=error_responses(401, 404))
async def suspend(cp: CP, _operator: Operator, account_id: str) -> AccountPublic:
    return account_public(await cp.accounts.set_suspended(account_id, True))


@router.post("/api/accounts/{account_id}/resume", responses=error_responses(401, 404))
async def resume(cp: CP, _operator: Operator, account_id: str) -> AccountPublic:
    return account_public(await cp.accounts.set_suspended(account_id, False))


@router.post("/api/invites", status_code=status.HTTP_201_CREATED, responses=SIGNED_IN)
async def create_invite(cp: CP, operator: Operator) -> InviteCreated:
    return InviteCreated(code=(await cp.accounts.create_invite(operator)).code)
