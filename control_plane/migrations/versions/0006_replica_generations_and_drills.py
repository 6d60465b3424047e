"""backup_state: replica generation and the last restore drill of the replica

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("backup_state", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("replica_generation", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("drill_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("drill_status", _S(length=16), nullable=True))
        batch_op.add_column(
            sa.Column("drill_problem", _S(length=2000), server_default="", nullable=False)
        )
        batch_op.add_column(sa.Column("drill_generation", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("drill_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_state", schema=None) as batch_op:
        for name in (
            "drill_seconds",
            "drill_generation",
            "drill_problem",
            "drill_status",
            "drill_at",
            "replica_generation",
        ):
            batch_op.drop_column(name)
