"""The single-writer database: transactions, group commits, readers that never wait for the
writer, and durability of acknowledged writes across a `kill -9` of the runtime."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from instance_runtime.core.db import Database, WriteEndedError
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


def _batch(db: Database, *writes: Callable[[sqlite3.Connection], object]) -> list[object]:
    """Submit `writes` so that they share one commit (the writer is held busy meanwhile);
    their outcomes, an exception or a value each."""
    running, gate = threading.Event(), threading.Event()

    def hold(conn: sqlite3.Connection) -> None:
        running.set()
        gate.wait(5)

    first = db.submit_write(hold)
    assert running.wait(5)  # the writer is in `hold`: the writes below queue up together
    futures = [db.submit_write(w) for w in writes]
    gate.set()
    first.result()
    return [f.exception() or f.result() for f in futures]


def _insert(value: str) -> Callable[[sqlite3.Connection], object]:
    return lambda c: c.execute("INSERT INTO t (v) VALUES (?)", (value,)).rowcount


def _values(db: Database) -> set[str]:
    return {r[0] for r in db.read_sync(lambda c: c.execute("SELECT v FROM t").fetchall())}


def test_a_write_that_rolls_back_its_whole_transaction_never_reports_the_others_saved(
    db: Database,
) -> None:
    db.write_sync(lambda c: c.execute("CREATE UNIQUE INDEX t_v ON t (v)"))
    db.write_sync(_insert("taken"))
    outcomes = _batch(
        db,
        _insert("before"),
        lambda c: c.execute("INSERT OR ROLLBACK INTO t (v) VALUES ('taken')"),
        _insert("after"),
    )
    assert isinstance(outcomes[0], WriteEndedError)  # undone by the next one: not a success
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert outcomes[2] == 1
    assert _values(db) == {"taken", "after"}


def test_a_trigger_raising_rollback_is_the_same_case(db: Database) -> None:
    db.write_sync(
        lambda c: c.execute(
            "CREATE TRIGGER no_bad BEFORE INSERT ON t WHEN NEW.v = 'bad'"
            " BEGIN SELECT RAISE(ROLLBACK, 'no bad'); END"
        )
    )
    outcomes = _batch(db, _insert("one"), _insert("bad"), _insert("two"))
    assert isinstance(outcomes[0], WriteEndedError)
    assert isinstance(outcomes[1], sqlite3.IntegrityError)
    assert outcomes[2] == 1
    assert _values(db) == {"two"}


def test_a_write_may_not_end_its_transaction_and_the_batch_is_told_the_truth(
    db: Database,
) -> None:
    def commits(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('committer')")
        conn.execute("COMMIT")

    def rolls_back(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t (v) VALUES ('roller')")
        conn.execute("ROLLBACK")

    outcomes = _batch(db, _insert("a"), commits, _insert("b"), rolls_back, _insert("c"))
    assert outcomes[0] == 1  # committed by `commits`: a success, truly
    assert isinstance(outcomes[1], WriteEndedError)
    assert isinstance(outcomes[2], WriteEndedError)  # rolled back by `rolls_back`
    assert isinstance(outcomes[3], WriteEndedError)
    assert outcomes[4] == 1
    assert _values(db) == {"a", "committer", "c"}
    assert db.write_sync(_insert("alone")) == 1  # the writer goes on as before


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


def _thread_of(conn: sqlite3.Connection) -> int:
    conn.execute("SELECT 1").fetchone()
    return threading.get_ident()


async def test_an_inline_read_runs_in_the_calling_thread(db: Database) -> None:
    db.write_sync(lambda c: c.execute("INSERT INTO t (v) VALUES ('a')"))
    assert await db.read(_thread_of, inline_key="short") == threading.get_ident()
    assert await db.read(_count, inline_key="short") == 1
    assert await db.read(_thread_of) != threading.get_ident()  # without a key: the pool


async def test_an_inline_read_that_fails_within_its_budget_raises(db: Database) -> None:
    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM missing_table")

    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        await db.read(bad, inline_key="bad")


_SLOW_SQL = (  # tens of millions of VM steps: far past 5 ms of CPU, unless interrupted
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000)"
    " SELECT count(*) FROM c"
)


async def test_an_inline_read_past_its_budget_is_run_again_on_the_pool(db: Database) -> None:
    runs: list[tuple[int, object]] = []

    def slow(conn: sqlite3.Connection) -> int:
        try:
            value: object = conn.execute(_SLOW_SQL).fetchone()[0]
        except sqlite3.OperationalError as exc:  # what a read that catches errors would see
            value = exc
        runs.append((threading.get_ident(), value))
        return threading.get_ident()

    here = threading.get_ident()
    assert await db.read(slow, inline_key="slow") != here  # answered by the pool's run
    assert runs[0][0] == here and isinstance(runs[0][1], sqlite3.OperationalError)
    assert runs[1][1] == 2000000  # interrupted inline: its outcome dropped, run whole again
    assert await db.read(slow, inline_key="slow") != here  # the key now goes to the pool
    assert len(runs) == 3 and runs[2][1] == 2000000
    assert await db.read(_thread_of, inline_key="short") == here  # other keys stay inline


async def test_awaited_writes_committed_together_are_each_answered(db: Database) -> None:
    """Writes awaited on the loop and queued behind a busy writer share one commit; each caller
    gets its own value or error, and one whose caller gave up is still saved."""
    release = threading.Event()
    busy = db.submit_write(lambda conn: release.wait(30))

    async def insert(i: int) -> int:
        def run(conn: sqlite3.Connection) -> int:
            if i == 3:
                raise ValueError("refused")
            return int(conn.execute("INSERT INTO t (v) VALUES (?)", (str(i),)).lastrowid or 0)

        return await db.write(run)

    tasks = [asyncio.create_task(insert(i)) for i in range(10)]
    await asyncio.sleep(0.05)  # all queued behind the busy write
    tasks[5].cancel()
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert busy.result(timeout=30) is True
    assert isinstance(results[3], ValueError) and isinstance(results[5], asyncio.CancelledError)
    ids = [r for i, r in enumerate(results) if i not in (3, 5)]
    assert len(set(ids)) == 8 and all(isinstance(r, int) and r > 0 for r in ids)
    saved = db.read_sync(lambda c: sorted(int(v) for (v,) in c.execute("SELECT v FROM t")))
    assert saved == [0, 1, 2, 4, 5, 6, 7, 8, 9]  # the abandoned write (5) stands


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
