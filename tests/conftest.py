"""Fixtures shared by the whole suite: a real PostgreSQL server and `pocketfleet serve` runs
against each control-database backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator

import pytest

from tests.support.postgres import PostgresServer
from tests.support.server import ServeProcess, running_server
from tests.support.workers import isolation_env

os.environ.update(isolation_env())  # Settings() made in tests (drivers, engines) too

_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture(scope="module")
def database_url(backend: str, request: pytest.FixtureRequest) -> str | None:
    """None means the default: SQLite in the data folder."""
    if backend == "sqlite":
        return None
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database(f"control_{next(_databases)}")


@pytest.fixture(scope="module")
def serve(database_url: str | None) -> Iterator[ServeProcess]:
    """A running control plane for a test module; every instance it started is stopped after."""
    with running_server(database_url=database_url) as server:
        yield server


# The longest files, started first: on xdist's workers (`make test`) the suite then ends
# with short files instead of waiting for one long file begun last.
SLOW_FILES = (
    "tests/control_plane/api/test_openapi_fuzz.py",
    "tests/control_plane/cli/test_cli.py",
    "tests/control_plane/backups/test_backups.py",
    "tests/control_plane/api/test_jobs.py",
    "tests/control_plane/backups/test_hostile_folders.py",
    "tests/test_end_to_end.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.nodeid.split("::", 1)[0]
        return SLOW_FILES.index(path) if path in SLOW_FILES else len(SLOW_FILES)

    items.sort(key=rank)  # stable: the order within a file, and of the rest, is kept
