"""Self-checks of tests/support/postgres.py against a real PostgreSQL server.

The ``postgres`` fixture is the session's server from tests/conftest.py.
"""

from __future__ import annotations

import socket
import time

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.support.postgres import PostgresServer


async def test_select_one_with_asyncpg(postgres: PostgresServer) -> None:
    connection = await asyncpg.connect(postgres.dsn())
    try:
        assert await connection.fetchval("select 1") == 1
        assert await connection.fetchval("show fsync") == "off"
    finally:
        await connection.close()


async def test_create_database_returns_a_working_sqlalchemy_url(postgres: PostgresServer) -> None:
    url = postgres.create_database("support_check")
    assert url == f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/support_check"
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            assert await connection.scalar(text("select current_database()")) == "support_check"
    finally:
        await engine.dispose()


def test_create_database_rejects_odd_names(postgres: PostgresServer) -> None:
    with pytest.raises(ValueError, match="invalid database name"):
        postgres.create_database("x; drop")


def test_start_then_stop_ends_the_server_and_removes_its_folder() -> None:
    server = PostgresServer()
    started = time.monotonic()
    server.start()
    print(f"PostgreSQL {server.bin_dir.parent.name} started in {time.monotonic() - started:.2f}s")
    base, port = server._base, server.port
    assert base is not None and (base / "data" / "postmaster.pid").exists()
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    server.stop()
    server.stop()  # idempotent
    assert not base.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5)
