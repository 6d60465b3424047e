"""Opening the control database: an async SQLAlchemy engine, sessions, and migrations.

SQLite (the default, under PF_DATA_DIR) runs in WAL mode with foreign keys on and a busy
timeout; PostgreSQL is used when PF_DATABASE_URL names one. The schema is managed by Alembic
(`control_plane/migrations`); `migrate()` brings any database to the newest revision.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

SessionFactory = async_sessionmaker[AsyncSession]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


async def update_row(db: SessionFactory, model: type[SQLModel], key: str, **fields: object) -> None:
    """Set `fields` on the `model` row with primary key `key` and commit (gone: nothing)."""
    async with db() as session:
        row = await session.get(model, key)
        if row is None:
            return
        for name, value in fields.items():
            setattr(row, name, value)
        session.add(row)
        await session.commit()


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate_sync(url: str) -> None:
    """Upgrade the database at `url` to the newest revision (runs its own event loop)."""
    command.upgrade(alembic_config(url), "head")


async def migrate(url: str) -> None:
    await asyncio.to_thread(migrate_sync, url)
