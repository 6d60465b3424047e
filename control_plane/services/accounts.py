"""Accounts: sign-up (open, by invitation, or closed), operators, suspension."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, func, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Invite, utcnow
from control_plane.security import hash_password, password_problem
from control_plane.services.errors import Conflict, Forbidden, Invalid, NotFound
from control_plane.settings import Settings


def normalize_email(email: str) -> str:
    return email.strip().lower()


def check_password(password: str, *, field: str = "password") -> None:
    """The one password rule (`security.password_problem`): raises `Invalid` naming `field`
    when it is not met."""
    problem = password_problem(password)
    if problem is not None:
        raise Invalid(f"the password {problem}", field=field)


class AccountService:
    def __init__(self, settings: Settings, db: SessionFactory, nudge: Callable[[], None]) -> None:
        self.settings = settings
        self.db = db
        self.nudge = nudge

    async def sign_up(self, email: str, password: str, invite: str | None = None) -> Account:
        """A new account. With `PF_SIGNUP=invite` it takes an unused invite code, redeemed by
        one conditional UPDATE in the account's own transaction: of concurrent sign-ups with
        one code, exactly one succeeds (403 for the others, as for an unknown code)."""
        email = normalize_email(email)
        check_password(password)
        if self.settings.signup == "closed":
            raise Forbidden("sign-up is closed on this server; ask an operator for an account")
        if self.settings.signup == "invite" and not invite:
            raise Forbidden("sign-up needs an invite code", field="invite")
        used = Forbidden("this invite code is unknown or already used", field="invite")
        async with self.db() as session:
            if self.settings.signup == "invite":
                row = await session.get(Invite, invite)
                if row is None or row.used_at is not None:  # early; the UPDATE below decides
                    raise used
            taken = await session.exec(select(Account.id).where(Account.email == email))
            if taken.first() is not None:
                raise Conflict("an account with this email exists; log in instead", field="email")
        password_hash = await asyncio.to_thread(hash_password, password)  # CPU: off the loop
        async with self.db() as session:
            first = (await session.exec(select(func.count()).select_from(Account))).one() == 0
            account = Account(
                email=email,
                password_hash=password_hash,
                is_operator=first and self.settings.first_account_is_operator,
            )
            session.add(account)
            try:
                await session.flush()
            except IntegrityError as exc:
                raise Conflict("an account with this email exists", field="email") from exc
            if self.settings.signup == "invite":
                redeemed = await session.exec(
                    update(Invite)
                    .where(col(Invite.code) == invite, col(Invite.used_at).is_(None))
                    .values(used_by=account.id, used_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if redeemed.rowcount != 1:  # another sign-up took it since the check above
                    await session.rollback()
                    raise used
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict("an account with this email exists", field="email") from exc
            return account

    async def get(self, account_id: str) -> Account:
        async with self.db() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise NotFound("no such account")
            return account

    async def create_operator(self, email: str, password: str) -> Account:
        """An operator account made on the machine, whatever the sign-up mode."""
        async with self.db() as session:
            account = Account(
                email=normalize_email(email),
                password_hash=hash_password(password),
                is_operator=True,
            )
            session.add(account)
            try:
                await session.commit()
            except IntegrityError as exc:
                raise Conflict(f"an account with the email {email} exists") from exc
            return account

    async def make_operator(self, email: str) -> Account:
        async with self.db() as session:
            account = (
                await session.exec(select(Account).where(Account.email == normalize_email(email)))
            ).first()
            if account is None:
                raise NotFound(f"no account has the email {email}")
            account.is_operator = True
            session.add(account)
            await session.commit()
            return account

    async def set_suspended(self, account_id: str, suspended: bool) -> Account:
        """Suspend (its instances stop and its requests are refused) or resume an account."""
        async with self.db() as session:
            account = await session.get(Account, account_id)
            if account is None:
                raise NotFound("no such account")
            account.suspended_at = utcnow() if suspended else None
            session.add(account)
            await session.commit()
        self.nudge()
        return account

    async def create_invite(self, operator: Account) -> Invite:
        async with self.db() as session:
            invite = Invite(code=secrets.token_urlsafe(16), created_by=operator.id)
            session.add(invite)
            await session.commit()
            return invite

    async def list_accounts(self) -> list[Account]:
        async with self.db() as session:
            return list(
                (await session.exec(select(Account).order_by(col(Account.created_at)))).all()
            )
