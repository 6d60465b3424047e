"""Tables of the control database.

Desired state lives here: an instance's `desired` column is what the owner asked for, `status`
is what the reconciler last made true (moved only by `control_plane.lifecycle.transition`).
"""

from __future__ import annotations

import secrets
import string
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from control_plane.db.sealed import SealedJSON

_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id(length: int = 15) -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite hands back naive ones)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


def _when(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class Account(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=15)
    email: str = Field(index=True, unique=True, max_length=254)
    password_hash: str
    is_operator: bool = False
    quota: int | None = None
    suspended_at: datetime | None = _when()
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )


class ApiToken(SQLModel, table=True):
    """A bearer credential: a login session (`kind="session"`) or a named API token.

    `scope`: "full" (every session, and API tokens by default: all the account may do) or
    "deploy" (an API token for CI: deploys and reading the instance, nothing else; see
    `control_plane.api.deps`). `instance_ids`: the instances a deploy token opens, by id (so
    a deleted instance's name taken again later is not opened by it); empty: every instance
    of the account. Ids are never removed from the list, so it never becomes empty by
    itself: a token whose listed instances were all deleted opens nothing.
    """

    __tablename__ = "api_token"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=15)
    account_id: str = Field(foreign_key="account.id", index=True, max_length=15)
    kind: str = Field(max_length=16)
    name: str = Field(default="", max_length=100)
    token_hash: str = Field(unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    scope: str = Field(default="full", max_length=16, sa_column_kwargs={"server_default": "full"})
    instance_ids: list[str] = Field(
        default_factory=list, sa_column=Column(sa.JSON, nullable=False, server_default="[]")
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    last_used_at: datetime | None = _when()
    expires_at: datetime | None = _when()
    revoked_at: datetime | None = _when()


class Invite(SQLModel, table=True):
    code: str = Field(primary_key=True, max_length=64)
    created_by: str = Field(foreign_key="account.id", max_length=15)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    used_by: str | None = Field(default=None, foreign_key="account.id", max_length=15)
    used_at: datetime | None = _when()


class Instance(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True, max_length=15)
    # NULL once deleted, so the name can be taken again; `former_name` keeps it for the record.
    name: str | None = Field(default=None, unique=True, max_length=40)
    former_name: str = Field(default="", max_length=40)
    owner_id: str = Field(foreign_key="account.id", index=True, max_length=15)
    engine: str = Field(max_length=32)
    version: str = Field(max_length=32)

    # desired state, written by services
    desired: str = Field(default="running", max_length=16)
    desired_by: str = Field(default="", max_length=64)  # actor of the last change of `desired`
    generation: int = 1  # bumped by every change that needs a restart (version, env)
    # sealed at rest (control_plane/db/sealed.py): read and written as plain values
    env: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(SealedJSON(), nullable=False)
    )
    idle_timeout_s: int | None = None
    purge: bool = False
    pending_superuser: dict[str, str] | None = Field(
        default=None, sa_column=Column(SealedJSON(), nullable=True)
    )
    # An exclusive operation on the instance (e.g. "restore:ID"): while set, the reconciler
    # keeps the instance stopped whatever `desired` says (deletion still proceeds). Set and
    # cleared by the operation's owner (control_plane.backups), which also clears it after a
    # crash of the control plane.
    hold: str | None = Field(default=None, max_length=64)
    # operators' per-instance limits (None: the fleet default, see control_plane.limits;
    # disk_limit_mb 0: no quota)
    max_processes: int | None = None
    disk_limit_mb: int | None = None
    # the Swarm node (id) holding its data (control_plane.nodes; "": this machine, or not
    # placed yet)
    node: str = Field(default="", max_length=64)

    # observed state, written by the reconciler through lifecycle.transition
    status: str = Field(default="provisioning", max_length=16, index=True)
    status_reason: str = Field(default="", max_length=2000)
    port: int | None = Field(default=None, unique=True)
    uid: int | None = Field(default=None, unique=True)
    pid: int | None = None
    running_generation: int | None = None
    crash_count: int = 0
    next_start_at: datetime | None = _when()
    started_at: datetime | None = _when()
    last_request_at: datetime | None = _when()
    hibernated_at: datetime | None = _when()  # since when it sleeps (None: awake)
    memory_bytes: int | None = None
    # the last measurement of the instance folder (control_plane.services.limits): allocated
    # bytes, when, and whether the walk saw everything (False: it stopped at its bounds)
    disk_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
    disk_measured_at: datetime | None = _when()
    disk_complete: bool | None = None

    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    updated_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    deleted_at: datetime | None = _when()


class InstanceEvent(SQLModel, table=True):
    __tablename__ = "instance_event"

    id: int | None = Field(default=None, primary_key=True)
    instance_id: str = Field(foreign_key="instance.id", index=True, max_length=15)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    from_state: str = Field(max_length=16)
    to_state: str = Field(max_length=16)
    actor: str = Field(max_length=64)
    reason: str = Field(default="", max_length=2000)


class InstanceSample(SQLModel, table=True):
    """One sample of an instance's activity: requests served since the previous sample and
    memory at sampling time (None when not running). Written by the reconciler's sampling,
    read for the dashboard's charts, pruned after `PF_METRICS_RETENTION_H` hours."""

    __tablename__ = "instance_sample"
    __table_args__ = (sa.Index("ix_instance_sample_instance_at", "instance_id", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    instance_id: str = Field(foreign_key="instance.id", max_length=15)
    at: datetime = Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))
    requests: int = 0
    memory_bytes: int | None = Field(default=None, sa_type=sa.BigInteger)
