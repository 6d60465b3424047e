"""The control database's sessions (`control_plane.db.engine`), on SQLite and PostgreSQL.

- Instances created all at once through the real service (`InstanceService.create`, which
  reads the ports and uids taken, then writes one more) each get their own port and uid, and
  every create succeeds: on SQLite its one writer runs them one after another (BEGIN
  IMMEDIATE), on PostgreSQL an advisory lock does (`serialized`).
- Read-modify-write transactions run at once lose no update: on SQLite as they are, on
  PostgreSQL under `serialized` (as the service's creates are).
- `db.read()` sessions read what the writer committed, and on SQLite cannot write.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from control_plane.db.engine import (
    SessionFactory,
    create_engine,
    migrate,
    serialized,
    session_factory,
)
from control_plane.db.models import Account, Instance
from control_plane.db.sealed import bind_keyring
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.registry import default_registry
from control_plane.schemas import InstanceCreate
from control_plane.sealing import load_keyring
from control_plane.services.instances import InstanceService
from control_plane.settings import Settings
from tests.support.postgres import PostgresServer

CREATES = 40
_databases = itertools.count()


class NoReconciler:
    def nudge(self) -> None: ...

    async def wait_settled(self, instance_id: str, timeout: float) -> None: ...

    def next_change(self) -> asyncio.Event:
        return asyncio.Event()


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database(f"control_db_{next(_databases)}")


@pytest.fixture
async def db(url: str, tmp_path: Path) -> AsyncIterator[tuple[SessionFactory, Settings]]:
    settings = Settings(data_dir=tmp_path / "data", database_url=url, default_quota=1000)
    await migrate(url)
    engine = create_engine(url)
    bind_keyring(engine, load_keyring(settings))
    factory = session_factory(engine)
    yield factory, settings
    await factory.aclose()
    await engine.dispose()


async def an_account(db: SessionFactory) -> Account:
    async with db() as session:
        account = Account(email="owner@example.com", password_hash="x", quota=CREATES)
        session.add(account)
        await session.commit()
        return account


async def test_instances_created_at_once_each_get_their_own_port_and_uid(
    db: tuple[SessionFactory, Settings],
) -> None:
    factory, settings = db
    account = await an_account(factory)
    service = InstanceService(
        settings, factory, default_registry(settings), ProcessDriver(settings), NoReconciler()
    )
    made = await asyncio.gather(
        *(service.create(account, InstanceCreate(name=f"app{i}")) for i in range(CREATES))
    )
    async with factory.read() as session:
        rows = (await session.exec(select(Instance))).all()
    assert len(rows) == len(made) == CREATES
    assert len({row.port for row in rows}) == CREATES
    assert len({row.uid for row in rows}) == CREATES


async def test_read_modify_write_transactions_at_once_lose_no_update(
    db: tuple[SessionFactory, Settings],
) -> None:
    factory, _ = db
    account = await an_account(factory)

    async def bump() -> None:
        async with factory() as session:
            await serialized(session, "bump")  # PostgreSQL's part; SQLite's writer is alone
            row = await session.get(Account, account.id)
            assert row is not None
            await asyncio.sleep(0)  # another task's transaction would run here, if it could
            row.quota = (row.quota or 0) + 1
            session.add(row)
            await session.commit()

    await asyncio.gather(*(bump() for _ in range(CREATES)))
    async with factory.read() as session:
        row = await session.get(Account, account.id)
    assert row is not None and row.quota == 2 * CREATES


async def test_readers_see_what_was_committed_and_write_nothing_on_sqlite(
    db: tuple[SessionFactory, Settings], url: str
) -> None:
    factory, _ = db
    account = await an_account(factory)
    async with factory.read() as session:
        found = await session.get(Account, account.id)
    assert found is not None and found.email == "owner@example.com"
    if not url.startswith("sqlite"):
        return
    with pytest.raises(OperationalError, match="readonly"):
        async with factory.read() as session:
            session.add(Account(email="other@example.com", password_hash="x"))
            await session.commit()
