"""instance: operators' per-instance limits (max_processes, disk_limit_mb) and the last
measurement of its folder (disk_bytes, disk_measured_at, disk_complete)

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 23:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
# 0008 is being written in parallel: once it lands, this revises it instead
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_processes", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("disk_limit_mb", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("disk_bytes", sa.BigInteger(), nullable=True))
        batch_op.add_column(
            sa.Column("disk_measured_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("disk_complete", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        for column in (
            "disk_complete",
            "disk_measured_at",
            "disk_bytes",
            "disk_limit_mb",
            "max_processes",
        ):
            batch_op.drop_column(column)
