"""Sealed columns (`control_plane.db.sealed`) against a real SQLite control database: what the
file holds, rows written in clear before sealing, and key rotation."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from control_plane.db.engine import create_engine, migrate, session_factory
from control_plane.db.models import Account, Instance
from control_plane.db.sealed import bind_keyring, seal_in_place
from control_plane.sealing import Keyring, KeyringError

SECRET = "zebra-crossing-4711-secret"
PASSWORD = "pending-password-0815"


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[Path, AsyncEngine]]:
    path = tmp_path / "control.db"
    url = f"sqlite+aiosqlite:///{path}"
    await migrate(url)
    engine = create_engine(url)
    yield path, engine
    await engine.dispose()


def file_bytes(path: Path) -> bytes:
    """The database as it is on disk: the file, its WAL and shared memory."""
    return b"".join(
        candidate.read_bytes()
        for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm"))
        if candidate.exists()
    )


async def add_instance(engine: AsyncEngine, name: str = "app", **fields: object) -> str:
    async with session_factory(engine)() as session:
        account = Account(email=f"{name}@example.com", password_hash="x")
        session.add(account)
        await session.flush()
        instance = Instance(name=name, owner_id=account.id, engine="pocketbase", version="1")
        for name, value in fields.items():
            setattr(instance, name, value)
        session.add(instance)
        await session.commit()
        return instance.id


async def raw(engine: AsyncEngine, column: str) -> str | None:
    async with engine.connect() as conn:
        value = (await conn.exec_driver_sql(f"SELECT {column} FROM instance")).scalar_one()
    return None if value is None else str(value)


async def test_values_are_sealed_in_the_file_and_plain_in_the_code(
    database: tuple[Path, AsyncEngine],
) -> None:
    path, engine = database
    bind_keyring(engine, Keyring(Fernet.generate_key()))
    instance_id = await add_instance(
        engine,
        env={"API_SECRET": SECRET},
        pending_superuser={"email": "a@example.com", "password": PASSWORD},
    )
    stored = await raw(engine, "env")
    assert stored is not None and json.loads(stored).startswith("fernet:")
    assert SECRET.encode() not in file_bytes(path)
    assert PASSWORD.encode() not in file_bytes(path)
    async with session_factory(engine)() as session:
        row = await session.get(Instance, instance_id)
        assert row is not None
        assert row.env == {"API_SECRET": SECRET}
        assert row.pending_superuser == {"email": "a@example.com", "password": PASSWORD}


async def test_rows_written_in_clear_are_read_then_sealed_at_start_and_leave_the_file(
    database: tuple[Path, AsyncEngine],
) -> None:
    path, engine = database
    bind_keyring(engine, Keyring(Fernet.generate_key()))
    instance_id = await add_instance(engine)
    async with engine.begin() as conn:  # as an older pocketfleet wrote them
        await conn.execute(
            sa.text("UPDATE instance SET env = :env, pending_superuser = :pending"),
            {
                "env": json.dumps({"API_SECRET": SECRET}),
                "pending": json.dumps({"email": "a@example.com", "password": PASSWORD}),
            },
        )
    async with session_factory(engine)() as session:
        row = await session.get(Instance, instance_id)
        assert row is not None and row.env == {"API_SECRET": SECRET}  # still works, lazily
    assert await seal_in_place(engine) == 2
    for column in ("env", "pending_superuser"):
        assert json.loads(str(await raw(engine, column))).startswith("fernet:")
    content = file_bytes(path)
    assert SECRET.encode() not in content and PASSWORD.encode() not in content
    async with session_factory(engine)() as session:
        row = await session.get(Instance, instance_id)
        assert row is not None and row.env == {"API_SECRET": SECRET}
        assert row.pending_superuser == {"email": "a@example.com", "password": PASSWORD}
    assert await seal_in_place(engine) == 0  # nothing left to do


async def test_values_under_an_old_key_are_sealed_again_with_the_new_one(
    database: tuple[Path, AsyncEngine],
) -> None:
    _path, engine = database
    old, new = Fernet.generate_key(), Fernet.generate_key()
    bind_keyring(engine, Keyring(old))
    await add_instance(engine, env={"API_SECRET": SECRET})
    rotated = Keyring(new, [old])
    bind_keyring(engine, rotated)
    assert await seal_in_place(engine) == 1
    assert rotated.is_current(json.loads(str(await raw(engine, "env"))))
    bind_keyring(engine, Keyring(new))  # the old key is no longer needed
    async with session_factory(engine)() as session:
        row = (await session.exec(select(Instance))).one()
        assert row.env == {"API_SECRET": SECRET}


async def test_without_a_key_nothing_secret_is_written(database: tuple[Path, AsyncEngine]) -> None:
    _path, engine = database
    await add_instance(engine)  # an empty env holds no secret: stored as it is
    with pytest.raises(sa.exc.StatementError) as caught:
        await add_instance(engine, "other", env={"API_SECRET": SECRET})
    assert isinstance(caught.value.orig, KeyringError)
