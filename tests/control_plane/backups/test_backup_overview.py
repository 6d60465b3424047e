"""The fleet overview's newest good and failed snapshot of every instance, read in one query
(`newest_snapshots`), against a real (SQLite) control database: the same snapshots as reading
each instance's snapshots newest first."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from control_plane.backups.models import BackupSnapshot
from control_plane.backups.overview import Newest, newest_snapshots
from control_plane.db.engine import SessionFactory, create_engine, migrate, session_factory
from control_plane.db.models import Account, Instance

START = datetime(2026, 1, 1, tzinfo=UTC)
STATUSES = ("good", "failed", "running")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SessionFactory]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'control.db'}"
    await migrate(url)
    engine = create_engine(url)
    factory = session_factory(engine)
    yield factory
    await factory.aclose()
    await engine.dispose()


async def fleet(db: SessionFactory, instances: int) -> list[str]:
    async with db() as session:
        account = Account(email="owner@example.com", password_hash="x")
        session.add(account)
        await session.flush()
        rows = [
            Instance(name=f"app{k}", owner_id=account.id, engine="pocketbase", version="1")
            for k in range(instances)
        ]
        session.add_all(rows)
        await session.commit()
        return [row.id for row in rows]


async def one_by_one(db: SessionFactory, ids: list[str]) -> dict[tuple[str, str], Newest]:
    """What the overview read before: each instance's snapshots newest first, the first good
    one and the first failed one."""
    found: dict[tuple[str, str], Newest] = {}
    async with db.read() as session:
        for instance_id in ids:
            rows = (
                await session.exec(
                    select(BackupSnapshot)
                    .where(BackupSnapshot.instance_id == instance_id)
                    .order_by(col(BackupSnapshot.created_at).desc(), col(BackupSnapshot.id).desc())
                )
            ).all()
            for status in ("good", "failed"):
                row = next((r for r in rows if r.status == status), None)
                if row is not None:
                    found[(instance_id, status)] = Newest(row.id, row.created_at, row.reason)
    return found


async def test_the_newest_good_and_failed_snapshot_of_each_instance(db: SessionFactory) -> None:
    ids = await fleet(db, 12)
    chance = random.Random(20)
    async with db() as session:
        for k, instance_id in enumerate(ids):
            if k == 0:
                continue  # no snapshot at all
            for n in range(chance.randint(1, 9)):
                status = "running" if k == 1 else chance.choice(STATUSES)  # 1: none finished
                session.add(
                    BackupSnapshot(
                        instance_id=instance_id,
                        status=status,
                        reason=f"{status} {n}",
                        # some at the same time: the id decides, as in one_by_one
                        created_at=START + timedelta(minutes=chance.randint(0, 5)),
                    )
                )
        await session.commit()
    newest = await newest_snapshots(db)
    assert newest == await one_by_one(db, ids)
    assert not any(key in newest for key in ((ids[0], "good"), (ids[1], "good")))
    assert all(status in ("good", "failed") for _, status in newest)


async def test_an_empty_fleet_has_no_snapshots(db: SessionFactory) -> None:
    assert await newest_snapshots(db) == {}
