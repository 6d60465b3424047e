"""Credentials: logging in (sessions), named API tokens, and resolving a bearer token."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, ApiToken, utcnow
from control_plane.login_throttle import LoginThrottle, Throttled
from control_plane.security import (
    hash_password,
    new_token,
    token_digest,
    verify_password,
)
from control_plane.services.accounts import check_password, normalize_email
from control_plane.services.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from control_plane.settings import Settings

SESSION = "session"
API = "api"


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

    async def create_api_token(self, account: Account, name: str) -> tuple[str, ApiToken]:
        token = new_token()
        row = ApiToken(
            account_id=account.id,
            kind=API,
            name=name,
            token_hash=token_digest(token),
            prefix=token[:10],
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
