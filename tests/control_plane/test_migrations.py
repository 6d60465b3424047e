"""The migration chain builds exactly the schema the models describe (a model changed without
its migration, or the other way round, shows up here as a difference)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import control_plane.backups.models
import control_plane.db.models
import control_plane.domains.models
import control_plane.jobs.models
import control_plane.sftp.models  # noqa: F401  (the tables of every concept)
from control_plane.db.engine import migrate_sync


def test_migrations_build_the_models_schema(tmp_path: Path) -> None:
    path = tmp_path / "control.db"
    migrate_sync(f"sqlite+aiosqlite:///{path}")
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    finally:
        engine.dispose()
    assert differences == []
