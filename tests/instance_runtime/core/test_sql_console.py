"""`core.sql_console.run_sql` on a real `App`: the time limit interrupts a runaway query on a
reader and on the writer (the runtime keeps working), the row limit, and the kind of a query."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from instance_runtime.core.app import App
from instance_runtime.core.sql_console import SqlConsoleError, is_write_query, run_sql

RUNAWAY = "with recursive c(x) as (select 1 union all select x + 1 from c) select count(*) from c"


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    runtime = App(tmp_path / "pb_data", readers=1)
    try:
        yield runtime
    finally:
        runtime.close()


def test_a_runaway_read_is_interrupted(app: App) -> None:
    with pytest.raises(SqlConsoleError, match=r"^interrupted \(9\)$"):
        asyncio.run(run_sql(app, RUNAWAY, timeout=0.2))
    assert asyncio.run(run_sql(app, "select 1"))["rows"] == [["1"]]


def test_a_runaway_write_is_interrupted_and_rolled_back(app: App) -> None:
    query = "create table sc_t (x); insert into sc_t " + RUNAWAY
    with pytest.raises(SqlConsoleError, match="interrupted"):
        asyncio.run(run_sql(app, query, timeout=0.2))
    result = asyncio.run(run_sql(app, "select count(*) from sqlite_master where name = 'sc_t'"))
    assert result["rows"] == [["0"]]
    assert asyncio.run(run_sql(app, "create table sc_t (x)"))["affectedRows"] == 0


def test_max_rows(app: App) -> None:
    query = (
        "with recursive c(x) as (select 1 union all select x + 1 from c where x < 20) "
        "select x from c"
    )
    assert len(asyncio.run(run_sql(app, query, max_rows=5))["rows"]) == 5


@pytest.mark.parametrize(
    ("query", "write"),
    [
        ("  insert into t values (1)", True),
        ("Delete from t", True),
        ("REPLACE into t values (1)", True),
        ("select 1; delete from t", False),
        ("with x as (select 1) insert into t select * from x", False),
        ("PRAGMA table_info(t)", False),
        ("DETACH x", True),
    ],
)
def test_the_kind_of_a_query(query: str, write: bool) -> None:
    assert is_write_query(query) is write
