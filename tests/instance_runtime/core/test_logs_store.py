"""The request log's store (`core.logs`) and its searches (`core.log_query`) on real SQLite files:
batched writes off the caller's thread, PocketBase's rows and settings, cleanups by index."""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from instance_runtime.core import logs as logs_module
from instance_runtime.core.app import App
from instance_runtime.core.log_query import find_log, list_logs, logs_stats
from instance_runtime.core.logs import (
    ERROR,
    INFO,
    WARN,
    RequestLog,
    cleanup_logs,
    encode_data,
    format_time,
)
from instance_runtime.core.records import ListParams
from instance_runtime.tools.search import FilterError

Settings = dict[str, Any]


def rows(path: Path, where: str = "1") -> list[tuple[Any, ...]]:
    """Read `_logs` with a connection of our own (what another process would see)."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(
            f"SELECT id, level, message, data, created FROM _logs WHERE {where} ORDER BY rowid"
        ).fetchall()


def wait_rows(path: Path, count: int, timeout: float = 5.0) -> list[tuple[Any, ...]]:
    deadline = time.monotonic() + timeout
    while True:
        if path.exists():
            with contextlib.suppress(sqlite3.OperationalError):
                found = rows(path)
                if len(found) >= count:
                    return found
        assert time.monotonic() < deadline, f"fewer than {count} rows after {timeout}s"
        time.sleep(0.02)


@pytest.fixture
def settings() -> Settings:
    return {"maxDays": 5, "minLevel": 0, "logIP": True, "logAuthId": False, "maxDataSize": 0}


@pytest.fixture
def store(tmp_path: Path, settings: Settings) -> Iterator[RequestLog]:
    log = RequestLog(tmp_path / "auxiliary.db", lambda: settings, interval=0.1)
    yield log
    log.close()


def old_row(conn: sqlite3.Connection, ident: str, days: float, level: int = INFO) -> None:
    conn.execute(
        "INSERT INTO _logs (id, level, message, data, created) VALUES (?, ?, ?, '{}', ?)",
        (ident, level, f"old {ident}", format_time(time.time() - days * 86400)),
    )


def test_a_start_opens_nothing_and_entries_land_in_pocketbase_rows(
    tmp_path: Path, store: RequestLog
) -> None:
    App(tmp_path / "pb_data").close()
    assert not (tmp_path / "pb_data" / "auxiliary.db").exists(), "a start never opens the log"
    assert not store.path.exists()
    before = time.time()
    store.add(INFO, "GET /api/health", {"url": "/api/health", "type": "request", "status": 200})
    store.add(ERROR, "GET /api/nope", {"status": 404, "error": "File not found.", "auth": ""})
    found = wait_rows(store.path, 2)
    (ident, level, message, data, created), second = found
    assert re.fullmatch(r"[a-z0-9]{15}", ident) and ident != second[0]
    assert (level, message, second[1]) == (INFO, "GET /api/health", ERROR)
    assert data == '{"status":200,"type":"request","url":"/api/health"}', "sorted keys as Go"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z", created)
    assert format_time(before - 1) <= created <= format_time(time.time())
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert {"idx_logs_level", "idx_logs_message", "idx_logs_created_hour"} <= indexes
    assert "idx_pocketfleet_logs_created" in indexes and journal == "wal"


def test_a_batch_larger_than_one_insert_statement_lands_whole_and_in_order(
    tmp_path: Path, settings: Settings
) -> None:
    log = RequestLog(tmp_path / "big.db", lambda: settings, batch_size=1000, interval=30)
    try:
        count = 2 * logs_module._INSERT_ROWS + 7  # two full statements and a short one
        for i in range(count):
            log.add(INFO if i % 2 else ERROR, f"GET /n/{i}", {"n": i})
        log.flush()
        found = rows(log.path)
    finally:
        log.close()
    assert [r[2] for r in found] == [f"GET /n/{i}" for i in range(count)]
    assert [r[1] for r in found[:2]] == [ERROR, INFO]
    assert [orjson.loads(r[3])["n"] for r in found] == list(range(count))
    assert len({r[0] for r in found}) == count


def test_entries_are_written_in_batches_by_count_or_by_time(
    tmp_path: Path, settings: Settings
) -> None:
    log = RequestLog(tmp_path / "a.db", lambda: settings, batch_size=5, interval=30)
    try:
        for i in range(4):
            log.add(INFO, f"m{i}", {})
        time.sleep(0.5)
        assert not log.path.exists() or rows(log.path) == [], "4 of 5: still waiting"
        log.add(INFO, "m4", {})  # the fifth fills the batch: written without waiting 30 s
        assert [r[2] for r in wait_rows(log.path, 5, timeout=3)] == [f"m{i}" for i in range(5)]
    finally:
        log.close()
    timed = RequestLog(tmp_path / "b.db", lambda: settings, batch_size=1000, interval=0.2)
    try:
        timed.add(INFO, "alone", {})
        assert [r[2] for r in wait_rows(timed.path, 1, timeout=3)] == ["alone"]
    finally:
        timed.close()


def test_adding_never_waits_for_a_locked_database(tmp_path: Path, settings: Settings) -> None:
    log = RequestLog(tmp_path / "aux.db", lambda: settings, batch_size=10, interval=0.05)
    try:
        log.add(INFO, "first", {})
        wait_rows(log.path, 1)
        blocker = sqlite3.connect(log.path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another writer holds the database
        started = time.perf_counter()
        for i in range(500):
            log.add(INFO, f"while locked {i}", {"i": i})
        assert time.perf_counter() - started < 0.25, "add() waited for the database"
        time.sleep(0.3)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert len(wait_rows(log.path, 501, timeout=15)) == 501, "all written once it is free"
    finally:
        log.close()


def test_close_writes_what_is_queued(tmp_path: Path, settings: Settings) -> None:
    log = RequestLog(tmp_path / "aux.db", lambda: settings, interval=60)
    for i in range(3):
        log.add(WARN, f"queued {i}", {"n": i})
    log.close()
    assert [r[2] for r in rows(log.path)] == ["queued 0", "queued 1", "queued 2"]
    log.add(INFO, "after close", {})
    log.close()
    assert len(rows(log.path)) == 3


def test_max_days_0_keeps_no_log_and_min_level_filters(
    store: RequestLog, settings: Settings
) -> None:
    assert store.enabled(INFO) and store.enabled(ERROR)
    settings["minLevel"] = 5
    assert not store.enabled(INFO) and not store.enabled(WARN) and store.enabled(ERROR)
    settings["maxDays"] = 0
    assert not store.enabled(ERROR), "maxDays 0: nothing is logged"
    settings.update(maxDays=5, minLevel=0)
    store.add(INFO, "queued before maxDays became 0", {})
    settings["maxDays"] = 0
    store.flush()
    assert not store.path.exists(), "entries written while maxDays is 0 are dropped"


def test_data_and_message_are_cut_as_pocketbase(store: RequestLog, settings: Settings) -> None:
    assert encode_data({"b": 2, "a": 1}, 100) == '{"a":1,"b":2}'
    cut = orjson.loads(encode_data({"a": "x" * 10, "b": "y" * 50, "c": 1}, 30))
    assert cut == {"a": "x" * 10, "__pb_truncated__": True}, "the members within the limit"
    assert orjson.loads(encode_data({"when": object}, 100))["when"].startswith("<class")
    settings["maxDataSize"] = 40
    store.add(INFO, "é" * 5000, {"a": 1, "big": "z" * 100})
    store.flush()
    ((_, _, message, data, _),) = rows(store.path)
    assert orjson.loads(data) == {"a": 1, "__pb_truncated__": True}
    assert message == "é" * 4000 and len(message.encode()) == 8000
    settings["maxDataSize"] = 0  # the default: 16 KiB
    store.add(INFO, "m", {"big": "z" * 20000})
    store.flush()
    assert orjson.loads(rows(store.path)[-1][3]) == {"__pb_truncated__": True}


def test_opening_and_a_settings_change_delete_what_is_no_longer_kept(
    tmp_path: Path, settings: Settings
) -> None:
    path = tmp_path / "aux.db"
    first = RequestLog(path, lambda: settings)
    first.recent(1)  # creates the table
    first.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        old_row(conn, "expired", days=6)
        old_row(conn, "kept", days=4)
        old_row(conn, "debugmsg", days=1, level=-4)
    settings["minLevel"] = -10
    log = RequestLog(path, lambda: settings, interval=0.05)
    try:
        log.add(INFO, "new", {})
        log.flush()
        assert [r[0] for r in rows(path)][:2] == ["kept", "debugmsg"], "as at PocketBase's start"
        settings["minLevel"] = 0
        done = log.settings_reloaded()  # returns at once; the writer deletes
        done.result(timeout=5)
        assert [r[2] for r in rows(path)] == ["old kept", "new"]
        settings["maxDays"] = 0
        log.settings_reloaded().result(timeout=5)
        assert rows(path) == [], "maxDays 0 deletes every entry"
    finally:
        log.close()


def test_cleanup_logs_deletes_entries_older_than_max_days(tmp_path: Path) -> None:
    app = App(tmp_path / "pb_data")
    try:
        store = app.request_log
        store.recent(1)
        with contextlib.closing(sqlite3.connect(store.path)) as conn, conn:
            for ident, days in (("d10", 10), ("d5", 5.01), ("d4", 4.99), ("d0", 0)):
                old_row(conn, ident, days)
        assert cleanup_logs(app).result(timeout=10) == 2
        assert [r[0] for r in rows(store.path)] == ["d4", "d0"]
        assert cleanup_logs(app).result(timeout=10) == 0
    finally:
        app.close()


@pytest.fixture
def filled(store: RequestLog) -> RequestLog:
    for i, status in enumerate((200, 200, 404, 500, 200)):
        level = ERROR if status >= 400 else INFO
        store.add(level, f"GET /api/n/{i}", {"status": status, "url": f"/api/n/{i}", "auth": ""})
    store.flush()
    return store


def search(store: RequestLog, **query: str) -> dict[str, Any]:
    result = asyncio.run(store.read(lambda conn: list_logs(conn, ListParams.parse(query))))
    return dict(orjson.loads(orjson.dumps(result)))


def test_list_filters_sorts_and_pages(filled: RequestLog) -> None:
    everything = search(filled)
    assert [i["message"] for i in everything["items"]] == [f"GET /api/n/{i}" for i in range(5)]
    assert (everything["totalItems"], everything["totalPages"], everything["perPage"]) == (5, 1, 30)
    assert list(everything["items"][0]) == ["id", "created", "data", "message", "level"]
    errors = search(filled, filter="data.status >= 400", sort="-data.status")
    assert [i["data"]["status"] for i in errors["items"]] == [500, 404]
    assert search(filled, filter="level = 8 && message ~ 'n/2'")["totalItems"] == 1
    page = search(filled, page="2", perPage="2", sort="-@rowid", skipTotal="1")
    assert [i["message"] for i in page["items"]] == ["GET /api/n/2", "GET /api/n/1"]
    assert (page["totalItems"], page["totalPages"], page["page"]) == (-1, -1, 2)
    for bad in ({"filter": "nope = 1"}, {"filter": "status ="}, {"sort": "x"}):
        with pytest.raises(FilterError):
            search(filled, **bad)


def test_find_and_hourly_stats(filled: RequestLog) -> None:
    first = search(filled)["items"][0]
    found = asyncio.run(filled.read(lambda conn: find_log(conn, first["id"])))
    assert found is not None and orjson.loads(orjson.dumps(found)) == first
    assert asyncio.run(filled.read(lambda conn: find_log(conn, "missing"))) is None
    with contextlib.closing(sqlite3.connect(filled.path)) as conn, conn:
        for ident, level, created in (
            ("h3a", INFO, "2020-01-02 03:04:05.000Z"),
            ("h3b", ERROR, "2020-01-02 03:59:59.999Z"),
            ("h5", ERROR, "2020-01-02 05:00:00.000Z"),
        ):
            conn.execute(
                "INSERT INTO _logs (id, level, message, data, created) VALUES (?, ?, '', '{}', ?)",
                (ident, level, created),
            )
    stats = asyncio.run(filled.read(lambda conn: logs_stats(conn)))
    assert stats[:2] == [
        {"date": "2020-01-02 03:00:00.000Z", "total": 2},
        {"date": "2020-01-02 05:00:00.000Z", "total": 1},
    ]
    assert sum(s["total"] for s in stats[2:]) == 5 and all(
        re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:00:00\.000Z", s["date"]) for s in stats
    )
    only = asyncio.run(filled.read(lambda conn: logs_stats(conn, "level = 8 && created < '2021'")))
    assert only == [
        {"date": "2020-01-02 03:00:00.000Z", "total": 1},
        {"date": "2020-01-02 05:00:00.000Z", "total": 1},
    ]
    with pytest.raises(FilterError):
        asyncio.run(filled.read(lambda conn: logs_stats(conn, "nope = 1")))


def page_count(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return int(conn.execute("PRAGMA page_count").fetchone()[0])


def test_emptying_the_log_gives_its_space_back(store: RequestLog, settings: Settings) -> None:
    for i in range(300):
        store.add(INFO, f"big {i}", {"payload": "p" * 4000})
    store.flush()
    assert page_count(store.path) > 300
    asyncio.run(store.truncate())
    assert rows(store.path) == [] and page_count(store.path) < 20, "truncate vacuums"
    for i in range(300):
        store.add(INFO, f"big {i}", {"payload": "p" * 4000})
    store.flush()
    settings["maxDays"] = 0
    store.settings_reloaded().result(timeout=10)
    assert rows(store.path) == [] and page_count(store.path) < 20, "maxDays 0 vacuums"
