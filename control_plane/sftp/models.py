"""The table of accounts' SSH public keys.

`SshKey`: one public key of one account, stored canonical (`TYPE BASE64`, see
`control_plane.sftp.keys`), found by its SHA256 fingerprint. A key is unique per account, not
across accounts: public keys are public, so a global rule would let anyone who knows yours
(say from a code forge) keep you from adding it. Whoever adds another account's public key
only opens their own instances to its holder.

`instance_ids`: None opens every instance of the account; a list opens only those instances
(by id, so a deleted instance's name taken again later is not opened by the old key; an empty
list, once every listed instance is deleted, opens nothing).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from control_plane.db.models import UTCDateTime, new_id, utcnow


def _when(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class SshKey(SQLModel, table=True):
    __tablename__ = "ssh_key"
    __table_args__ = (
        sa.UniqueConstraint("account_id", "fingerprint", name="uq_ssh_key_account_fingerprint"),
    )

    id: str = Field(default_factory=new_id, primary_key=True, max_length=15)
    account_id: str = Field(foreign_key="account.id", index=True, max_length=15)
    name: str = Field(default="", max_length=100)
    key_type: str = Field(max_length=32)
    public_key: str = Field(max_length=16384)
    fingerprint: str = Field(max_length=64)
    instance_ids: list[str] | None = Field(default=None, sa_column=Column(sa.JSON, nullable=True))
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    last_used_at: datetime | None = _when()
