"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-26 09:06:09.692502
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "account",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=15), nullable=False),
        sa.Column("email", sqlmodel.sql.sqltypes.AutoString(length=254), nullable=False),
        sa.Column("password_hash", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("is_operator", sa.Boolean(), nullable=False),
        sa.Column("quota", sa.Integer(), nullable=True),
        sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_account_email"), ["email"], unique=True)

    op.create_table(
        "api_token",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=15), nullable=False),
        sa.Column("account_id", sqlmodel.sql.sqltypes.AutoString(length=15), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
        sa.Column("token_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("prefix", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["account.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_token_account_id"), ["account_id"], unique=False)

    op.create_table(
        "instance",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=15), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("former_name", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("owner_id", sqlmodel.sql.sqltypes.AutoString(length=15), nullable=False),
        sa.Column("engine", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("version", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("desired", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("desired_by", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("env", sa.JSON(), nullable=False),
        sa.Column("idle_timeout_s", sa.Integer(), nullable=True),
        sa.Column("purge", sa.Boolean(), nullable=False),
        sa.Column("pending_superuser", sa.JSON(), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status_reason", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("uid", sa.Integer(), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("running_generation", sa.Integer(), nullable=True),
        sa.Column("crash_count", sa.Integer(), nullable=False),
        sa.Column("next_start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_request_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("memory_bytes", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["owner_id"],
            ["account.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
        sa.UniqueConstraint("port"),
        sa.UniqueConstraint("uid"),
    )
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_owner_id"), ["owner_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_instance_status"), ["status"], unique=False)

    op.create_table(
        "invite",
        sa.Column("code", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("created_by", sqlmodel.sql.sqltypes.AutoString(length=15), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_by", sqlmodel.sql.sqltypes.AutoString(length=15), nullable=True),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["account.id"],
        ),
        sa.ForeignKeyConstraint(
            ["used_by"],
            ["account.id"],
        ),
        sa.PrimaryKeyConstraint("code"),
    )
    op.create_table(
        "instance_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sqlmodel.sql.sqltypes.AutoString(length=15), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("to_state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("actor", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_id"],
            ["instance.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("instance_event", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_instance_event_instance_id"), ["instance_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("instance_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_event_instance_id"))

    op.drop_table("instance_event")
    op.drop_table("invite")
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_status"))
        batch_op.drop_index(batch_op.f("ix_instance_owner_id"))

    op.drop_table("instance")
    with op.batch_alter_table("api_token", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_token_account_id"))

    op.drop_table("api_token")
    with op.batch_alter_table("account", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_account_email"))

    op.drop_table("account")
