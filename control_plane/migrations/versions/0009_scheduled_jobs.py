"""scheduled jobs of instances and their runs (control_plane/jobs)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "scheduled_job",
        sa.Column("id", _S(length=15), nullable=False),
        sa.Column("instance_id", _S(length=15), nullable=False),
        sa.Column("schedule", _S(length=100), nullable=False),
        sa.Column("method", _S(length=8), nullable=False),
        sa.Column("path", _S(length=2048), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("anchored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", _S(length=16), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["instance.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("scheduled_job", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_scheduled_job_instance_id"), ["instance_id"], unique=False
        )

    op.create_table(
        "scheduled_job_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", _S(length=15), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", _S(length=16), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("error", _S(length=500), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["scheduled_job.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("scheduled_job_run", schema=None) as batch_op:
        batch_op.create_index("ix_scheduled_job_run_job_id_id", ["job_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("scheduled_job_run", schema=None) as batch_op:
        batch_op.drop_index("ix_scheduled_job_run_job_id_id")
    op.drop_table("scheduled_job_run")
    with op.batch_alter_table("scheduled_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_scheduled_job_instance_id"))
    op.drop_table("scheduled_job")
