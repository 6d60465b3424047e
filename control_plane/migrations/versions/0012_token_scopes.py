"""api_token: scope ("full" or "deploy") and the instances a deploy token opens (issue 14)

Existing tokens and sessions become full tokens opening every instance (`full`, `[]`).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("scope", _S(length=16), server_default="full", nullable=False)
        )
        batch_op.add_column(
            sa.Column("instance_ids", sa.JSON(), server_default="[]", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_column("instance_ids")
        batch_op.drop_column("scope")
