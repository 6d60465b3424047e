"""Accounts' SSH public keys, and who an SFTP login is.

- `add(account, data)`: stores a key (`control_plane.sftp.keys` checks it; 422 with its
  reason otherwise). `name` defaults to the key's comment, else its type. `instances` limits
  the key to those of the caller's own instances (422 for a name that is not one of them —
  an operator's key opens only the operator's instances too); omitted, it opens them all.
  The same key twice on one account: 409. More than `MAX_KEYS_PER_ACCOUNT` keys: 409.
- `list_for(account)` (oldest first), `remove(account, key_id)` (404 unless the caller's).
- `public(rows)`: the API's view, the instances a key opens by name (one query).
- `authorize(instance_name, fingerprint)`: the SFTP server's question at login: the `Grant`
  when a live instance has that name, its owner is not suspended, the owner has a key with
  that fingerprint, and the key opens the instance; None otherwise (never says which).
  Owners only: an operator's key does not open other accounts' instances over SFTP.
- `mark_used(key_id)`: records a completed login.
- `host_public()`: the SFTP server's host key (fingerprint) and address, for clients to check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Instance, utcnow
from control_plane.lifecycle import InstanceState
from control_plane.services.errors import Conflict, Invalid, NotFound
from control_plane.services.instance_names import LIVE, live_names, own_instance_ids
from control_plane.settings import Settings
from control_plane.sftp.host_key import HostKey
from control_plane.sftp.keys import KeyRefused, parse_public_key
from control_plane.sftp.models import SshKey
from control_plane.sftp.schemas import SshHostKeyPublic, SshKeyCreate, SshKeyPublic

MAX_KEYS_PER_ACCOUNT = 50


@dataclass(frozen=True)
class Grant:
    """What a successful SFTP login opens: one instance (its row as read at the check), as
    its owner, through one key."""

    key_id: str
    account_id: str
    instance: Instance
    instance_name: str

    @property
    def busy(self) -> str | None:
        """Why the instance's files may not change now (a restore, a deletion), or None."""
        if self.instance.status == InstanceState.DELETING:
            return f"{self.instance_name} is being deleted"
        if self.instance.hold is not None:
            return f"{self.instance_name} is busy ({self.instance.hold}); try again once it is done"
        return None


def _clean_name(name: str | None, fallback: str) -> str:
    text = " ".join((name or "").split())  # no control characters, newlines or runs of space
    if any(not ch.isprintable() for ch in text):
        raise Invalid("a key's name holds no control characters", field="name")
    return text[:100] or fallback


class SshKeyService:
    def __init__(self, settings: Settings, db: SessionFactory, host_key: HostKey) -> None:
        self.settings = settings
        self.db = db
        self.host_key = host_key
        self._removal_listeners: list[Callable[[str], None]] = []

    def host_public(self) -> SshHostKeyPublic:
        """The SFTP server's host key, and where it listens (None: PF_SFTP is off)."""
        listen = self.settings.sftp_listen
        return SshHostKeyPublic(
            key_type=self.host_key.key_type,
            fingerprint=self.host_key.fingerprint,
            public_key=self.host_key.public_line,
            address=self.settings.sftp.strip() if listen is not None else None,
            port=listen[1] if listen is not None else None,
        )

    def on_removed(self, listener: Callable[[str], None]) -> None:
        """Call `listener(key_id)` whenever a key is removed (the SFTP server closes the
        sessions it opened)."""
        self._removal_listeners.append(listener)

    # ----- owners

    async def add(self, account: Account, data: SshKeyCreate) -> SshKey:
        try:
            parsed = parse_public_key(data.public_key)
        except KeyRefused as exc:
            raise Invalid(str(exc), field="public_key") from None
        name = _clean_name(data.name, _clean_name(parsed.comment, parsed.key_type))
        instance_ids = (
            None
            if data.instances is None
            else await own_instance_ids(self.db, account, data.instances)
        )
        async with self.db() as session:
            owned = (
                await session.exec(
                    select(SshKey.fingerprint).where(SshKey.account_id == account.id)
                )
            ).all()
            if parsed.fingerprint in owned:
                raise Conflict("you have already added this key", field="public_key")
            if len(owned) >= MAX_KEYS_PER_ACCOUNT:
                raise Conflict(f"an account may have at most {MAX_KEYS_PER_ACCOUNT} SSH keys")
            row = SshKey(
                account_id=account.id,
                name=name,
                key_type=parsed.key_type,
                public_key=parsed.canonical,
                fingerprint=parsed.fingerprint,
                instance_ids=instance_ids,
            )
            session.add(row)
            try:
                await session.commit()
            except IntegrityError:  # the same key, added at the same moment
                raise Conflict("you have already added this key", field="public_key") from None
            return row

    async def list_for(self, account: Account) -> Sequence[SshKey]:
        async with self.db() as session:
            return (
                await session.exec(
                    select(SshKey)
                    .where(SshKey.account_id == account.id)
                    .order_by(col(SshKey.created_at), col(SshKey.id))
                )
            ).all()

    async def remove(self, account: Account, key_id: str) -> SshKey:
        async with self.db() as session:
            row = await session.get(SshKey, key_id)
            if row is None or row.account_id != account.id:
                raise NotFound("you have no SSH key with this id")
            await session.delete(row)
            await session.commit()
        for listener in self._removal_listeners:
            listener(key_id)
        return row

    async def public(self, rows: Sequence[SshKey]) -> list[SshKeyPublic]:
        """The API's view of `rows`; listed instances by name (deleted ones left out)."""
        listed = {instance_id for row in rows for instance_id in row.instance_ids or ()}
        names = await live_names(self.db, listed)
        return [
            SshKeyPublic(
                id=row.id,
                name=row.name,
                key_type=row.key_type,
                fingerprint=row.fingerprint,
                public_key=row.public_key,
                instances=None
                if row.instance_ids is None
                else [names[i] for i in row.instance_ids if i in names],
                created=row.created_at,
                last_used=row.last_used_at,
            )
            for row in rows
        ]

    # ----- the SFTP server

    async def authorize(self, instance_name: str, fingerprint: str) -> Grant | None:
        async with self.db() as session:
            found = (
                await session.exec(
                    select(Instance, Account, SshKey)
                    .join(Account, col(Account.id) == col(Instance.owner_id))
                    .join(SshKey, col(SshKey.account_id) == col(Account.id))
                    .where(
                        Instance.name == instance_name,
                        LIVE,
                        SshKey.fingerprint == fingerprint,
                        col(Account.suspended_at).is_(None),
                    )
                )
            ).first()
        if found is None:
            return None
        instance, account, key = found
        if key.instance_ids is not None and instance.id not in key.instance_ids:
            return None
        return Grant(
            key_id=key.id, account_id=account.id, instance=instance, instance_name=instance_name
        )

    async def mark_used(self, key_id: str) -> None:
        async with self.db() as session:
            row = await session.get(SshKey, key_id)
            if row is not None:
                row.last_used_at = utcnow()
                session.add(row)
                await session.commit()
