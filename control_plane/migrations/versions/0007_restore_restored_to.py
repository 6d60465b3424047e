"""backup_restore.restored_to: the moment a point-in-time restore actually rebuilt

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 17:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("backup_restore", schema=None) as batch_op:
        batch_op.add_column(sa.Column("restored_to", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("backup_restore", schema=None) as batch_op:
        batch_op.drop_column("restored_to")
