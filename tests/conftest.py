"""Fixtures shared by the whole suite: a real PostgreSQL server and `pocketfleet serve` runs
against each control-database backend (SQLite and PostgreSQL)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import scheduling
from tests.support.postgres import PostgresServer
from tests.support.server import ServeProcess, running_server
from tests.support.unit_costs import REPORT_ATTR, PhaseMeter, UnitCosts
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


# Scheduling over xdist's workers (`make test`): see tests/support/scheduling.py; what each
# unit cost (`--units N`): tests/support/unit_costs.py.
_taken: list[tuple[str, float]] = []
_meter = PhaseMeter()
_costs = UnitCosts()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--units", type=int, default=0, metavar="N",
        help="print the N test units (files, shared folders) that cost the most CPU",
    )  # fmt: skip


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(report, REPORT_ATTR, _meter.take())
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    scheduling.order(items, scheduling.known_seconds(config))


@pytest.hookimpl(optionalhook=True)  # xdist's hook: unknown with `-p no:xdist`
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getvalue("dist") == "loadfile":
        return scheduling.UnitScheduling(config, log)
    return None


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    node.workerinput[scheduling.WORKERINPUT_KEY] = scheduling.known_seconds(node.config)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _taken.append((report.nodeid, report.duration))
    _costs.add(report)


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    top = int(config.getoption("--units"))
    if top > 0 and _costs.cpu:
        terminalreporter.write_sep("=", f"the {top} units that cost the most CPU")
        for line in _costs.lines(top):
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller, or a run without xdist
        scheduling.record(session.config, _taken)
