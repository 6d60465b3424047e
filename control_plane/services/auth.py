"""Credentials: logging in (sessions), named API tokens, and resolving a bearer token.

API tokens have a scope (issue 14): `FULL` (the default, and every session: all the account
may do) or `DEPLOY`, for CI: deploys of the account's own instances and reading them, nothing
else (`control_plane.api.deps` enforces it). A deploy token opens the instances it was made
for (by id; none listed: every instance of the account, operators' tokens included — never
other accounts' instances).

- `create_api_token(account, data)`: 422 (field "instances") for a name that is not one of
  the caller's live instances, in the same words whether it exists elsewhere or not at all.
- `public(rows)`: the API's view, listed instances by their current names (one query).
- `token_opens(account, token, name)`: whether `token` may act on the instance `name`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Final

from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, ApiToken, Instance, utcnow
from control_plane.login_throttle import LoginThrottle, Throttled
from control_plane.schemas import TokenCreate, TokenPublic
from control_plane.security import (
    hash_password,
    new_token,
    token_digest,
    verify_password,
)
from control_plane.services.accounts import check_password, normalize_email
from control_plane.services.errors import (
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
)
from control_plane.services.instance_names import LIVE, live_names, own_instance_ids
from control_plane.settings import Settings

SESSION = "session"
API = "api"
FULL: Final = "full"
DEPLOY: Final = "deploy"


class AuthService:
    def __init__(self, settings: Settings, db: SessionFactory) -> None:
        self.settings = settings
        self.db = db
        self.throttle = LoginThrottle(
            settings.login_max_failures, settings.login_window_s, settings.login_max_delay_s
        )

    async def log_in(self, email: str, password: str, client_ip: str) -> tuple[str, ApiToken]:
        """A new session token for valid credentials; 401 otherwise, 429 after repeated
        failures of this email from `client_ip` or from `client_ip` overall (the real client
        address, see `control_plane.api.client_address`), 403 for a suspended account.

        Logins of an email failing from many addresses are slowed down, never refused: see
        `control_plane.login_throttle`."""
        email = normalize_email(email)
        try:
            attempt = self.throttle.reserve(email, client_ip)
        except Throttled as exc:
            raise TooManyRequests(str(exc), retry_after=exc.retry_after_s) from None
        checked = False
        try:
            if attempt.delay_s:
                await asyncio.sleep(attempt.delay_s)
            async with self.db() as session:
                account = (
                    await session.exec(select(Account).where(Account.email == email))
                ).first()
            checked = True
            # argon2 takes tens of milliseconds of CPU: not on the event loop
            valid = await asyncio.to_thread(
                verify_password, account.password_hash if account else None, password
            )
        except BaseException:
            if not checked:
                attempt.abandoned()
            raise
        if not valid:
            raise Unauthorized("wrong email or password")
        attempt.succeeded()
        assert account is not None
        if account.suspended_at is not None:
            raise Forbidden("this account is suspended; contact an operator")
        token = new_token()
        row = ApiToken(
            account_id=account.id,
            kind=SESSION,
            name="session",
            token_hash=token_digest(token),
            prefix=token[:10],
            expires_at=utcnow() + timedelta(seconds=self.settings.session_ttl_s),
        )
        async with self.db() as session:
            session.add(row)
            await session.commit()
        return token, row

    async def authenticate(self, token: str) -> tuple[Account, ApiToken]:
        """The account behind a bearer token; 401 when unknown/expired, 403 when suspended."""
        async with self.db() as session:
            row = (
                await session.exec(
                    select(ApiToken).where(ApiToken.token_hash == token_digest(token))
                )
            ).first()
            now = utcnow()
            if (
                row is None
                or row.revoked_at is not None
                or (row.expires_at is not None and row.expires_at <= now)
            ):
                raise Unauthorized("the token is invalid or expired; log in again")
            account = await session.get(Account, row.account_id)
            if account is None:
                raise Unauthorized("the token is invalid or expired; log in again")
            if account.suspended_at is not None:
                raise Forbidden("this account is suspended; contact an operator")
            if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
                row.last_used_at = now
                session.add(row)
                await session.commit()
            return account, row

    async def revoke(self, account: Account, token_id: str, kind: str | None = None) -> None:
        async with self.db() as session:
            row = await session.get(ApiToken, token_id)
            if row is None or row.account_id != account.id or (kind and row.kind != kind):
                raise NotFound("no such token")
            if row.revoked_at is None:
                row.revoked_at = utcnow()
                session.add(row)
                await session.commit()

    async def change_password(
        self,
        account: Account,
        current_password: str,
        new_password: str,
        *,
        keep_session: str | None = None,
    ) -> None:
        """Replace the password after checking the current one. Every login session of the
        account ends except `keep_session` (a token id); named API tokens stay valid."""
        check_password(new_password, field="new_password")
        async with self.db() as session:
            row = await session.get(Account, account.id)
            if row is None or not verify_password(row.password_hash, current_password):
                raise Forbidden("the current password is wrong", field="current_password")
            row.password_hash = hash_password(new_password)
            session.add(row)
            sessions = await session.exec(
                select(ApiToken).where(
                    ApiToken.account_id == account.id,
                    ApiToken.kind == SESSION,
                    col(ApiToken.revoked_at).is_(None),
                )
            )
            now = utcnow()
            for token in sessions.all():
                if token.id != keep_session:
                    token.revoked_at = now
                    session.add(token)
            await session.commit()

    async def create_api_token(self, account: Account, data: TokenCreate) -> tuple[str, ApiToken]:
        """A new API token, shown once. `data.instances` (scope deploy only, which the
        schema checks) are names of the caller's own live instances."""
        instance_ids = await own_instance_ids(self.db, account, data.instances or ())
        token = new_token()
        row = ApiToken(
            account_id=account.id,
            kind=API,
            name=data.name,
            token_hash=token_digest(token),
            prefix=token[:10],
            scope=data.scope,
            instance_ids=instance_ids,
        )
        async with self.db() as session:
            session.add(row)
            await session.commit()
        return token, row

    async def list_api_tokens(self, account: Account) -> list[ApiToken]:
        async with self.db() as session:
            rows = await session.exec(
                select(ApiToken)
                .where(ApiToken.account_id == account.id, ApiToken.kind == API)
                .where(col(ApiToken.revoked_at).is_(None))
                .order_by(col(ApiToken.created_at))
            )
            return list(rows.all())

    async def public(self, rows: Sequence[ApiToken]) -> list[TokenPublic]:
        """The API's view of `rows`: a deploy token's instances by their current names
        (deleted ones left out); null for a token that opens every instance."""
        listed = {instance_id for row in rows for instance_id in row.instance_ids}
        names = await live_names(self.db, listed)
        return [
            TokenPublic(
                id=row.id,
                name=row.name,
                prefix=row.prefix,
                scope=DEPLOY if row.scope == DEPLOY else FULL,
                instances=[names[i] for i in row.instance_ids if i in names]
                if row.scope == DEPLOY and row.instance_ids
                else None,
                created=row.created_at,
                last_used=row.last_used_at,
            )
            for row in rows
        ]

    async def token_opens(self, account: Account, token: ApiToken, name: str) -> bool:
        """Whether the deploy-scoped `token` of `account` may act on the instance `name`:
        one of the account's own live instances (an operator's token opens no other
        account's), and one of those the token lists unless it lists none."""
        if token.scope != DEPLOY or token.account_id != account.id:
            return False
        async with self.db() as session:
            instance_id = (
                await session.exec(
                    select(Instance.id).where(
                        Instance.name == name, Instance.owner_id == account.id, LIVE
                    )
                )
            ).first()
        return instance_id is not None and (
            not token.instance_ids or instance_id in token.instance_ids
        )
