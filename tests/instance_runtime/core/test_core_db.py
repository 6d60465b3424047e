"""The single-writer database: transactions, group commits, readers that never wait for the
writer, and durability of acknowledged writes across a `kill -9` of the runtime."""

from __future__ import annotations

import signal
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from instance_runtime.core.db import Database
from tests.instance_runtime.runtime_process import RuntimeProcess


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "data.db")
    database.write_sync(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    yield database
    database.close()


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM t").fetchone()[0])


def test_a_failing_write_is_rolled_back_alone(db: Database) -> None:
    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('lost')")
        raise ValueError("refused")

    futures = []
    for i in range(50):  # queued together: they share commits
        futures.append(
            db.submit_write(lambda c, i=i: c.execute("INSERT INTO t VALUES (?, ?)", (i, i)))
        )
        futures.append(db.submit_write(bad))
    errors = [f.exception() for f in futures]
    assert sum(isinstance(e, ValueError) for e in errors) == 50
    assert db.read_sync(_count) == 50
    assert db.read_sync(lambda c: c.execute("SELECT 1 FROM t WHERE v='lost'").fetchone()) is None


def test_readers_do_not_wait_for_the_writer(db: Database) -> None:
    db.write_sync(lambda c: c.execute("INSERT INTO t (v) VALUES ('committed')"))
    inside, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('pending')")
        inside.set()
        assert release.wait(30)

    pending = db.submit_write(slow)
    assert inside.wait(30)
    # the write transaction is open and holds the write lock; a read still answers at once
    assert db.read_sync(_count) == 1
    release.set()
    pending.result(timeout=30)
    assert db.read_sync(_count) == 2


def test_wal_and_foreign_keys(db: Database) -> None:
    assert db.write_sync(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0]) == "wal"
    assert db.read_sync(lambda c: c.execute("PRAGMA foreign_keys").fetchone()[0]) == 1
    assert db.read_sync(lambda c: c.execute("PRAGMA busy_timeout").fetchone()[0]) > 0


def test_acknowledged_records_survive_kill_9() -> None:
    with RuntimeProcess.started() as runtime:
        su = runtime.client(superuser=True)
        made = su.post(
            "/api/collections",
            json={"name": "events", "createRule": "", "fields": [{"name": "n", "type": "number"}]},
        )
        assert made.status_code == 200, made.text
        acknowledged: list[str] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(worker: int) -> None:
            with httpx.Client(base_url=runtime.url, timeout=10) as client:
                for n in range(10_000):
                    if stop.is_set():
                        return
                    try:
                        response = client.post("/api/collections/events/records", json={"n": n})
                    except httpx.HTTPError:
                        return  # the process is gone: this one was never acknowledged
                    if response.status_code == 200:
                        with lock:
                            acknowledged.append(response.json()["id"])
                            if len(acknowledged) >= 300:
                                stop.set()

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(writer, w) for w in range(4)]
            assert stop.wait(120), "the runtime did not acknowledge enough writes"
            runtime.stop(signal.SIGKILL)  # while writers are still sending
            for future in futures:
                future.result()

        runtime.start()
        stored: set[str] = set()
        with runtime.client(superuser=True) as client:
            for page in range(1, 100):
                listed = client.get(
                    "/api/collections/events/records",
                    params={"perPage": 1000, "page": page, "fields": "id", "skipTotal": 1},
                ).json()["items"]
                stored.update(item["id"] for item in listed)
                if len(listed) < 1000:
                    break
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged records lost"


@pytest.mark.parametrize("autocheckpoint", [True, False])
def test_checkpoints_can_be_left_to_another_process(tmp_path: Path, autocheckpoint: bool) -> None:
    path = tmp_path / "data.db"
    database = Database(path, autocheckpoint=autocheckpoint)
    database.write_sync(lambda c: c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    beside = sqlite3.connect(path)  # another process's connection, as Litestream keeps one
    assert beside.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    for i in range(1000):  # a commit each, 2 pages or more: well past 1,000 pages of WAL
        database.write_sync(
            lambda c, i=i: c.execute("INSERT INTO t VALUES (?, ?)", (i, "x" * 5000))
        )
    database.close()
    frames = path.with_name("data.db-wal").stat().st_size // (4096 + 24)
    if autocheckpoint:
        assert frames == 0  # checkpointed as it went, and truncated on close
    else:
        assert frames >= 2000  # every frame left for the other process to checkpoint
    assert beside.execute("SELECT COUNT(*) FROM t").fetchone() == (1000,)
    beside.close()
