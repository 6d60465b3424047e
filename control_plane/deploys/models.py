"""The table of deploys.

`Deploy`: one deploy of an instance's code folders (`pb_hooks/`, `pb_migrations/`,
`pb_public/`). `status` is `running` while it is applied, then `done` (the instance serves it,
or, stopped or hibernated, will serve it when it starts) or `failed` (refused by the engine at
start: the previous folders were put back; `message` holds the engine's own words). A
rollback is a new deploy with `rollback_of` set (the deploy whose content it put back). The content
that became live is kept as `PF_DATA_DIR/deploys/INSTANCE_ID/DEPLOY_ID.tar.gz` (0600) for the
newest `PF_DEPLOYS_KEEP` deploys; `archived` says whether it still is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from control_plane.db.models import UTCDateTime, new_id, utcnow


class Deploy(SQLModel, table=True):
    __tablename__ = "deploy"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=15)
    instance_id: str = Field(
        foreign_key="instance.id", ondelete="CASCADE", index=True, max_length=15
    )
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    finished_at: datetime | None = Field(
        default=None, sa_column=Column(UTCDateTime(), nullable=True)
    )
    actor: str = Field(max_length=64)
    status: str = Field(default="running", max_length=16)
    keep: bool = False
    rollback_of: str | None = Field(default=None, max_length=15)
    file_count: int = 0
    total_bytes: int = Field(default=0, sa_type=sa.BigInteger)
    sha256: str = Field(default="", max_length=64)  # of the kept archive
    manifest: dict[str, Any] = Field(
        default_factory=dict, sa_column=Column(sa.JSON(), nullable=False)
    )  # {"pb_hooks/main.pb.js": "sha256 hex", ...}
    started: bool = False  # whether the instance was started on the new folders
    archived: bool = False
    message: str = Field(default="", max_length=2000)
    log: str = Field(default="", sa_column=Column(sa.Text(), nullable=False))
