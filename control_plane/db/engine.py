"""Opening the control database: an async SQLAlchemy engine, sessions, and migrations.

SQLite (the default, under PF_DATA_DIR) has one writer, and the control plane gives it one:
- every session of the `SessionFactory` (`db()`) runs on the writer connection, the only one
  in its pool, so writes of this process are serialised by the pool (a session waits its
  turn, never fails with "database is locked" or runs out of pooled connections); each of
  its transactions begins with `BEGIN IMMEDIATE`, so a transaction that reads then writes
  holds the write lock from its first statement: no other writer (`pocketfleet down` or
  `operator add` in another process) writes between its read and its write, and one that
  tries waits (busy timeout) instead of failing on a stale snapshot;
- sessions therefore stay short: no waiting on processes, the network or a thread pool while
  one is open (measure, then write);
- `db.read()` is a session on read-only connections of their own (`PRAGMA query_only`), a
  small pool that WAL lets read beside the writer, for reads that lead to no write in the
  same transaction (listings, the reconciler's passes, the wake fast path);
- WAL, foreign keys on, `synchronous=NORMAL`.
PostgreSQL is used when PF_DATABASE_URL names one: a pool of several connections, sessions and
`read()` alike on it. Code that reads then writes what a concurrent transaction could write
meanwhile (a new instance's port and uid) takes `serialized(session, name)` first: a
transaction-scoped advisory lock there, nothing on SQLite (its writer is alone already).

The schema is managed by Alembic (`control_plane/migrations`); `migrate()` brings any database
to the newest revision.
"""

from __future__ import annotations

import asyncio
import zlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, func
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession

from control_plane.db.sealed import follow_keyring

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"

BUSY_TIMEOUT_MS = 10_000  # another process's write transaction (they are short)
POOL_TIMEOUT_S = 120.0  # a session waiting for its turn on the writer, at most
SQLITE_READERS = 4
POSTGRES_POOL = 10
POSTGRES_OVERFLOW = 20


def _sqlite_connect(readonly: bool) -> Any:
    def connect(dbapi_connection: Any, _record: Any) -> None:
        # no implicit BEGIN from the driver: `_begin` below says how each transaction begins
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        if readonly:
            cursor.execute("PRAGMA query_only=ON")
        cursor.close()

    return connect


def _begin(statement: str) -> Any:
    def begin(conn: Connection) -> None:
        if conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
            return  # VACUUM and the like run outside any transaction
        conn.exec_driver_sql(statement)

    return begin


def create_engine(url: str, *, readonly: bool = False) -> AsyncEngine:
    """The engine of the control database at `url`. On SQLite: the writer (a pool of one
    connection, transactions that begin IMMEDIATE), or with `readonly` the readers."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(
            url,
            poolclass=AsyncAdaptedQueuePool,
            pool_size=SQLITE_READERS if readonly else 1,
            max_overflow=0,
            pool_timeout=POOL_TIMEOUT_S,
            connect_args={"timeout": BUSY_TIMEOUT_MS / 1000},
        )
        event.listen(engine.sync_engine, "connect", _sqlite_connect(readonly))
        event.listen(
            engine.sync_engine, "begin", _begin("BEGIN" if readonly else "BEGIN IMMEDIATE")
        )
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_size=POSTGRES_POOL,
        max_overflow=POSTGRES_OVERFLOW,
        pool_timeout=POOL_TIMEOUT_S,
    )


class SessionFactory(async_sessionmaker[AsyncSession]):
    """Sessions on the writer (`db()`), and read-only ones (`db.read()`); see the module
    docstring. `aclose()` closes the readers (the writer's engine is its owner's to dispose)."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine, class_=AsyncSession, expire_on_commit=False)
        self.engine = engine
        self._readers: AsyncEngine | None = None
        self._read: async_sessionmaker[AsyncSession] | None = None

    def read(self) -> AsyncSession:
        """A session for reads only (on SQLite, a write in it fails)."""
        if self._read is None:
            readers = self.engine
            if self.engine.dialect.name == "sqlite":
                readers = create_engine(self.engine.url.render_as_string(False), readonly=True)
                follow_keyring(readers, self.engine)  # sealed columns read as on the writer
                self._readers = readers
            self._read = async_sessionmaker(readers, class_=AsyncSession, expire_on_commit=False)
        return self._read()

    async def aclose(self) -> None:
        if self._readers is not None:
            await self._readers.dispose()
            self._readers = None
        self._read = None


def session_factory(engine: AsyncEngine) -> SessionFactory:
    return SessionFactory(engine)


async def serialized(session: AsyncSession, name: str) -> None:
    """Hold the lock `name` until the session's transaction ends, so that transactions that
    read then write the same thing (e.g. the ports and uids taken) run one after another:
    PostgreSQL's advisory transaction lock; on SQLite nothing (one writer, BEGIN IMMEDIATE)."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(name.encode())
        lock = select(func.pg_advisory_xact_lock(key))
        await session.exec(lock)


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
