"""backups: snapshots, restores, per-instance backup state, and instance.hold

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_S = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("hold", _S(length=64), nullable=True))

    op.create_table(
        "backup_snapshot",
        sa.Column("id", _S(length=15), nullable=False),
        sa.Column("instance_id", _S(length=15), nullable=False),
        sa.Column("status", _S(length=16), nullable=False),
        sa.Column("trigger", _S(length=16), nullable=False),
        sa.Column("actor", _S(length=64), nullable=False),
        sa.Column("key", _S(length=512), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", _S(length=64), nullable=True),
        sa.Column("upload_id", _S(length=1024), nullable=True),
        sa.Column("fingerprint", _S(length=64), nullable=True),
        sa.Column("engine", _S(length=32), nullable=False),
        sa.Column("version", _S(length=32), nullable=False),
        sa.Column("reason", _S(length=2000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instance.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_backup_snapshot_instance_created", "backup_snapshot", ["instance_id", "created_at"]
    )
    op.create_index("ix_backup_snapshot_status", "backup_snapshot", ["status"])

    op.create_table(
        "backup_restore",
        sa.Column("id", _S(length=15), nullable=False),
        sa.Column("instance_id", _S(length=15), nullable=False),
        sa.Column("snapshot_id", _S(length=15), nullable=True),
        sa.Column("point_in_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", _S(length=16), nullable=False),
        sa.Column("phase", _S(length=16), nullable=False),
        sa.Column("actor", _S(length=64), nullable=False),
        sa.Column("reason", _S(length=2000), nullable=False),
        sa.Column("safety_copy", _S(length=1024), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instance.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_backup_restore_instance_id", "backup_restore", ["instance_id"])
    op.create_index("ix_backup_restore_status", "backup_restore", ["status"])

    op.create_table(
        "backup_state",
        sa.Column("instance_id", _S(length=15), nullable=False),
        sa.Column("schedule", _S(length=100), nullable=True),
        sa.Column("last_fingerprint", _S(length=64), nullable=True),
        sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["instance_id"], ["instance.id"]),
        sa.PrimaryKeyConstraint("instance_id"),
    )


def downgrade() -> None:
    op.drop_table("backup_state")
    op.drop_index("ix_backup_restore_status", table_name="backup_restore")
    op.drop_index("ix_backup_restore_instance_id", table_name="backup_restore")
    op.drop_table("backup_restore")
    op.drop_index("ix_backup_snapshot_status", table_name="backup_snapshot")
    op.drop_index("ix_backup_snapshot_instance_created", table_name="backup_snapshot")
    op.drop_table("backup_snapshot")
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("hold")
