"""custom_domain: domains claimed by instances, pending until verified

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "custom_domain",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("domain", _S(length=253), nullable=False),
        sa.Column("instance_id", _S(length=15), nullable=False),
        sa.Column("token", _S(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("verified_by", _S(length=8), nullable=False),
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", _S(length=500), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instance.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("domain"),
    )
    with op.batch_alter_table("custom_domain", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_custom_domain_instance_id"), ["instance_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("custom_domain", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_custom_domain_instance_id"))
    op.drop_table("custom_domain")
