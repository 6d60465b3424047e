"""The single-writer SQLite database: one writer thread fed by a queue + pooled readers.

Contract:

- `Database(path)` opens `path` in WAL mode with foreign keys on, a busy timeout and
  `synchronous=NORMAL` (as PocketBase): a transaction acknowledged by `write()` survives a
  `kill -9` of the process.
- `await db.write(fn)` runs `fn(conn)` on the only writing connection, in its own thread, inside
  a transaction: committed when `fn` returns, rolled back when it raises (the exception is
  re-raised to the caller). Writes run one at a time in submission order; a burst of queued
  writes is committed together (each in its own SAVEPOINT, so one failing write undoes only
  itself) and every caller is answered only after the commit. A write that ends the
  transaction itself (a raw `COMMIT`/`ROLLBACK`) fails with `WriteEndedError`; one whose
  statement makes SQLite roll the whole transaction back (`INSERT OR ROLLBACK`, a trigger's
  `RAISE(ROLLBACK)`) fails with its error, and so do the writes of its batch it undid, with
  `WriteEndedError` (never a success for a write that was not saved); the rest of the batch
  goes on in a new transaction.
- `await db.read(fn)` runs `fn(conn)` on a read-only connection of a small thread pool; readers
  see the last committed state and never wait for the writer (WAL).
- `await db.read(fn, inline_key=KEY)` first runs `fn` right in the calling (event loop) thread,
  on that thread's own read-only connection: no hand-over to the pool, whose cost (a thread
  switch, and the GIL passed back and forth at every row SQLite steps) is most of a short
  read's. Only for reads that are usually short and never block on anything but SQLite: when
  the run goes past the budget (5 ms of the thread's CPU time, Python's GIL switch interval:
  no longer than a pool reader holding the GIL could stall the loop anyway; CPU time, so
  that a loaded machine does not push reads off), SQLite interrupts it, its outcome
  (value or error) is dropped and `fn` runs again on the pool, as every read of `KEY` (the
  shape of the request, hashable) does for the next `_SLOW_FOR_S` seconds. `fn` must then
  be repeatable (reads are).
- `write_sync` / `read_sync` do the same from a thread that is not running the event loop
  (CLI, startup). `fn` must not keep the connection or rows past its return.
- `on_connect` callbacks (e.g. registering SQL functions) run for every connection opened.
- `Database(path, autocheckpoint=False)` leaves checkpoints to another process (Litestream,
  which checkpoints the databases it replicates): the writer never checkpoints, nor does
  `close()`. Python's `sqlite3` may be built with a SQLite older than 3.51.3, whose
  checkpoints can corrupt a WAL database when another process checkpoints and writes at the
  same moment (the "WAL-reset" bug); a runtime that never checkpoints cannot trigger it.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

ConnectHook = Callable[[sqlite3.Connection], None]

_PRAGMAS = (
    "PRAGMA busy_timeout = 10000",
    "PRAGMA journal_mode = WAL",
    "PRAGMA journal_size_limit = 200000000",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA temp_store = MEMORY",
    "PRAGMA cache_size = -16000",
)

# How many queued writes at most share one commit.
_MAX_GROUP = 64

# Inline reads (see the module docstring): SQLite calls the budget check every this many VM
# instructions (a few microseconds); a read key that went over stays on the pool this long.
_PROGRESS_OPS = 1000
_SLOW_FOR_S = 60.0
_SLOW_KEYS_MAX = 512


class DatabaseClosedError(RuntimeError):
    """The database was closed; no more reads or writes are accepted."""


def _connect(path: Path, *, readonly: bool, hooks: list[ConnectHook]) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, cached_statements=256
    )
    for pragma in _PRAGMAS:
        if readonly and "journal_mode" in pragma:
            continue
        conn.execute(pragma)
    if readonly:
        conn.execute("PRAGMA query_only = ON")
    for hook in hooks:
        hook(conn)
    return conn


class _WriteTask:
    """A queued write: answered through `future`, a thread's `concurrent.futures.Future`, or,
    with `loop`, an `asyncio.Future` of that loop (resolved on it, see `_answer`)."""

    __slots__ = ("fn", "future", "loop")

    def __init__(
        self,
        fn: Callable[[sqlite3.Connection], Any],
        future: Future[Any] | asyncio.Future[Any],
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.fn = fn
        self.future = future
        self.loop = loop


Answer = tuple["asyncio.Future[Any]", BaseException | None, Any]


def _answer(answers: list[Answer]) -> None:
    """On a loop: resolve the asyncio futures of a committed group's writes (a caller that
    was cancelled meanwhile is not answered; its write stands or fails as the others)."""
    for future, error, value in answers:
        if future.done():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


# A row of this temporary table marks the writer's open transaction: when a statement ends
# the transaction under a write (`INSERT OR ROLLBACK`, `RAISE(ROLLBACK)` in a trigger, a raw
# `COMMIT`), the row tells whether what the earlier writes of the batch did was committed
# (it is still there) or rolled back (gone with them).
_MARK = "pf_writer_transaction"
_ENDED = "a write must not end its transaction"


class WriteEndedError(sqlite3.OperationalError):
    """A write ended its transaction itself, or another write of its batch rolled it back."""


def _begin(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(f"INSERT INTO temp.{_MARK} VALUES (1)")


def _transaction_ended(
    conn: sqlite3.Connection,
    done: list[tuple[_WriteTask, BaseException | None, Any]],
    pending: list[int],
) -> None:
    """The transaction holding the writes `pending` ended inside another write: they stand
    if it was committed, else they fail (nothing of them was saved)."""
    committed = conn.execute(f"SELECT count(*) FROM temp.{_MARK}").fetchone()[0] > 0
    conn.execute(f"DELETE FROM temp.{_MARK}")
    if not committed:
        lost = WriteEndedError("rolled back by another write committed with it; nothing saved")
        for i in pending:
            done[i] = (done[i][0], lost, None)
    pending.clear()


class Database:
    """See the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        readers: int = 3,
        on_connect: list[ConnectHook] | None = None,
        autocheckpoint: bool = True,
    ) -> None:
        self.path = path
        self._hooks = list(on_connect or [])
        self._closed = False
        self.autocheckpoint = autocheckpoint
        # The writer connection is opened first so that WAL mode is set before readers open.
        self._writer_conn = _connect(path, readonly=False, hooks=self._hooks)
        if not autocheckpoint:
            self._writer_conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._writer_conn.execute(f"CREATE TEMP TABLE {_MARK} (n INTEGER)")
        self._queue: queue.SimpleQueue[_WriteTask | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="db-writer", daemon=True)
        self._writer.start()
        self._local = threading.local()
        self._reader_conns: list[sqlite3.Connection] = []
        self._reader_lock = threading.Lock()
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="db-reader")
        self._slow: dict[Hashable, float] = {}  # inline read key -> when to try inline again

    # ------------------------------------------------------------------ writes
    def _write_loop(self) -> None:
        conn = self._writer_conn
        while True:
            task = self._queue.get()
            if task is None:
                break
            group = [task]
            stop = False
            while len(group) < _MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                group.append(more)
            self._run_group(conn, group)
            if stop:
                break
        conn.close()

    @staticmethod
    def _run_group(conn: sqlite3.Connection, group: list[_WriteTask]) -> None:
        """Run `group` in as few transactions as it allows (see the module docstring), then
        answer every task: a task's value only once what it wrote is committed."""
        done: list[tuple[_WriteTask, BaseException | None, Any]] = []  # answered after commit
        pending: list[int] = []  # indexes in `done` of writes the open transaction holds
        savepoints = len(group) > 1
        for task in group:
            try:
                if not conn.in_transaction:
                    _begin(conn)
                if savepoints:
                    conn.execute("SAVEPOINT w")
                value = task.fn(conn)
            except BaseException as exc:
                if conn.in_transaction:
                    if savepoints:
                        conn.execute("ROLLBACK TO w")
                        conn.execute("RELEASE w")
                    else:
                        conn.execute("ROLLBACK")
                else:
                    _transaction_ended(conn, done, pending)
                done.append((task, exc, None))
                continue
            if not conn.in_transaction:  # `fn` committed or rolled back by itself
                _transaction_ended(conn, done, pending)
                done.append((task, WriteEndedError(_ENDED), None))
                continue
            if savepoints:
                conn.execute("RELEASE w")
            pending.append(len(done))
            done.append((task, None, value))
        try:
            if conn.in_transaction:
                conn.execute(f"DELETE FROM temp.{_MARK}")
                conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for i in pending:
                done[i] = (done[i][0], exc, None)
        by_loop: dict[asyncio.AbstractEventLoop, list[Answer]] = {}
        for task, error, value in done:
            future = task.future
            if task.loop is not None:  # one wake-up of each loop for the whole group
                assert isinstance(future, asyncio.Future)
                by_loop.setdefault(task.loop, []).append((future, error, value))
            elif error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
        for loop, answers in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_answer, answers)

    def submit_write(self, fn: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Queue `fn` for the writer; the returned future resolves after its commit."""
        if self._closed:
            raise DatabaseClosedError("database is closed")
        future: Future[T] = Future()
        self._queue.put(_WriteTask(fn, future))
        return future

    async def write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn(conn)` in a write transaction (see the module docstring). The writer answers
        an asyncio future directly, waking the loop once per committed group (no thread
        future, condition and per-write wake-up of `asyncio.wrap_future`)."""
        if self._closed:
            raise DatabaseClosedError("database is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_WriteTask(fn, future, loop))
        return await future

    def write_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`write` for threads that do not run the event loop."""
        return self.submit_write(fn).result()

    # ------------------------------------------------------------------ reads
    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path, readonly=True, hooks=self._hooks)
            self._local.conn = conn
            with self._reader_lock:
                self._reader_conns.append(conn)
        return conn

    def _run_read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._reader()
        try:
            return fn(conn)
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")

    def _run_inline(self, fn: Callable[[sqlite3.Connection], T]) -> list[T]:
        """`[value]` when `fn` ran within the budget, `[]` when it went over (what it returned
        or raised then is dropped)."""
        conn = self._reader()
        deadline = time.thread_time() + sys.getswitchinterval()
        over = False

        def check() -> int:
            nonlocal over
            if time.thread_time() > deadline:
                over = True
            return over

        conn.set_progress_handler(check, _PROGRESS_OPS)
        try:
            value = fn(conn)
        except BaseException:
            if over:
                return []
            raise
        finally:
            conn.set_progress_handler(None, _PROGRESS_OPS)
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        return [] if over else [value]

    async def read(
        self, fn: Callable[[sqlite3.Connection], T], *, inline_key: Hashable | None = None
    ) -> T:
        """Run `fn(conn)` on a pooled read-only connection (with `inline_key`: first in this
        thread, see the module docstring)."""
        if self._closed:
            raise DatabaseClosedError("database is closed")
        if inline_key is not None:
            now = time.monotonic()
            retry_at = self._slow.get(inline_key)
            if retry_at is None or retry_at <= now:
                done = self._run_inline(fn)
                if done:
                    return done[0]
                if len(self._slow) >= _SLOW_KEYS_MAX:
                    self._slow.clear()
                self._slow[inline_key] = now + _SLOW_FOR_S
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self._run_read, fn)

    def read_sync(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`read` for threads that do not run the event loop."""
        if self._closed:
            raise DatabaseClosedError("database is closed")
        return self._readers.submit(self._run_read, fn).result()

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Finish queued writes, checkpoint the WAL (unless checkpoints are left to another
        process) and close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self._readers.shutdown(wait=True)
        with self._reader_lock:
            for conn in self._reader_conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._reader_conns.clear()
        if self.autocheckpoint:
            with contextlib.suppress(sqlite3.Error):
                conn = sqlite3.connect(str(self.path))
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                conn.close()
