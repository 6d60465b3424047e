"""accounts' SSH public keys for SFTP (control_plane/sftp)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-02 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "ssh_key",
        sa.Column("id", _S(length=15), nullable=False),
        sa.Column("account_id", _S(length=15), nullable=False),
        sa.Column("name", _S(length=100), nullable=False),
        sa.Column("key_type", _S(length=32), nullable=False),
        sa.Column("public_key", _S(length=16384), nullable=False),
        sa.Column("fingerprint", _S(length=64), nullable=False),
        sa.Column("instance_ids", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["account_id"], ["account.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "fingerprint", name="uq_ssh_key_account_fingerprint"),
    )
    with op.batch_alter_table("ssh_key", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ssh_key_account_id"), ["account_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ssh_key", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ssh_key_account_id"))
    op.drop_table("ssh_key")
