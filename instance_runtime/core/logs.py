"""The app's log (PocketBase's `_logs` table of `pb_data/auxiliary.db`), written in batches off
the request path.

Contract:

- `RequestLog(path, settings)` keeps the log in the SQLite database at `path`; `settings()`
  returns the current `settings.logs` member (`maxDays`, `minLevel`, `maxDataSize`, ...). The
  database is opened on first need (the first batch written, the first read), never at start.
  Opening creates PocketBase's `_logs` table and indexes (level, message, created hour) plus an
  index on `created`, then deletes what the settings no longer keep (as PocketBase does at
  every start) through those indexes: neither a start nor a cleanup reads the whole table.
- `enabled(level)`: whether an entry of `level` is kept at all: `maxDays` > 0 (0 means no log)
  and `level >= minLevel` (PocketBase's levels: DEBUG -4, INFO 0, WARN 4, ERROR 8).
  `add(level, message, data)` queues one entry stamped with the current time and returns at
  once (a deque append): it never touches the database. A writer thread (started with the
  first entry) writes the queued entries in one transaction every `interval` seconds, or as
  soon as `batch_size` are queued; entries that arrive while `maxDays` is 0 are dropped there
  (as PocketBase's batch writer). At most `MAX_PENDING` entries wait; beyond that the oldest go.
- Rows as PocketBase writes them: a 15-character `[a-z0-9]` id, `created` as
  `YYYY-MM-DD HH:MM:SS.mmmZ` (UTC), `data` as JSON with sorted keys, cut to `maxDataSize`
  bytes (0: 16 KiB) keeping the members that fit, plus `"__pb_truncated__": true`; `message`
  cut to 8000 bytes.
- `flush()` writes what is queued and does any maintenance asked for, and returns once it is
  committed (from any thread; it blocks). `close()` flushes, stops the writer and closes the
  database (idempotent; later entries are dropped).
- `settings_reloaded()` (after a change of settings) has the writer delete what the new
  settings do not keep (`created <= now - maxDays days` or `level < minLevel`) and, when
  `maxDays` is 0, vacuum; it returns at once with a future resolved when that is done (the
  settings API waits for it, as PocketBase deletes before it answers).
- `delete_expired()` deletes the entries created `maxDays` days ago or earlier (PocketBase's
  `__pbLogsCleanup__` job, `LOGS_CLEANUP_JOB`: `cleanup_logs(app)` is its entry point for the
  scheduler, every 6 hours, `LOGS_CLEANUP_CRON`). `truncate()` deletes every entry and
  vacuums (`DELETE /api/logs`).
- `await read(fn)` runs `fn(conn)` on a read connection of the log's database; `recent(n)`
  flushes and returns the newest `n` entries, newest first (for tests and tools).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson

from instance_runtime.core.db import Database

if TYPE_CHECKING:
    from instance_runtime.core.app import App

T = TypeVar("T")

log = logging.getLogger("instance_runtime.requests")

DEBUG = -4
INFO = 0
WARN = 4
ERROR = 8  # PocketBase's (slog's) levels

LOGS_TABLE = "_logs"
LOGS_CLEANUP_JOB = "__pbLogsCleanup__"
LOGS_CLEANUP_CRON = "0 */6 * * *"
BATCH_SIZE = 200
FLUSH_INTERVAL_S = 1.0
MAX_PENDING = 20_000
DEFAULT_MAX_DATA_SIZE = 16 << 10
MAX_MESSAGE_SIZE = 8000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS `_logs` (
    `id`      TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
    `level`   INTEGER DEFAULT 0 NOT NULL,
    `message` TEXT DEFAULT "" NOT NULL,
    `data`    JSON DEFAULT "{}" NOT NULL,
    `created` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
);
CREATE INDEX IF NOT EXISTS idx_logs_level on `_logs` (`level`);
CREATE INDEX IF NOT EXISTS idx_logs_message on `_logs` (`message`);
CREATE INDEX IF NOT EXISTS idx_logs_created_hour
    on `_logs` (strftime('%Y-%m-%d %H:00:00', `created`));
CREATE INDEX IF NOT EXISTS idx_pocketfleet_logs_created on `_logs` (`created`);
"""
_INSERT = "INSERT INTO `_logs` (`id`, `level`, `message`, `data`, `created`) VALUES (?, ?, ?, ?, ?)"
_INSERT_ROWS = 100  # rows per INSERT (5 parameters each: far below SQLite's limit of 32766)

_ID_LENGTH = 15
_ID_ALPHABET = b"abcdefghijklmnopqrstuvwxyz0123456789"
# Random bytes 0..251 map evenly onto the 36 characters; 252..255 are dropped (no bias).
_ID_TABLE = bytes(_ID_ALPHABET[b % 36] for b in range(252)) + b"aaaa"
_ID_REJECT = bytes(range(252, 256))

Entry = tuple[float, int, str, dict[str, Any]]


def new_ids(count: int) -> list[str]:
    """`count` random ids as PocketBase's `GenerateDefaultRandomId` (15 of `[a-z0-9]`)."""
    need = count * _ID_LENGTH
    chars = b""
    while len(chars) < need:
        chars += os.urandom(need - len(chars) + 16).translate(_ID_TABLE, _ID_REJECT)
    text = chars[:need].decode("ascii")
    return [text[i : i + _ID_LENGTH] for i in range(0, need, _ID_LENGTH)]


_last_second: tuple[int, str] = (-1, "")


def format_time(stamp: float) -> str:
    """`stamp` (Unix seconds) as PocketBase stores dates: `2024-01-02 03:04:05.678Z`."""
    global _last_second
    secs, milli = divmod(int(stamp * 1000), 1000)
    cached, text = _last_second  # a batch's entries mostly share their second
    if cached != secs:
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(secs))
        _last_second = (secs, text)
    return f"{text}.{milli:03d}Z"


def encode_data(data: Mapping[str, Any], limit: int) -> str:
    """`data` as JSON with sorted keys, at most `limit` bytes of its members (see the module
    docstring); values JSON cannot hold are written as their `str()`."""
    raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS, default=str)
    if len(raw) <= limit:
        return raw.decode()
    kept: dict[str, Any] = {}
    end = 1  # the members whose text ends within the first `limit` bytes are kept
    for key in sorted(data):
        size = len(orjson.dumps({key: data[key]}, default=str)) - 2 + (1 if kept else 0)
        if end + size > limit:
            break
        kept[key] = data[key]
        end += size
    kept["__pb_truncated__"] = True
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS, default=str).decode()


def _cut_message(message: str) -> str:
    if len(message) * 4 <= MAX_MESSAGE_SIZE:
        return message
    raw = message.encode()
    if len(raw) <= MAX_MESSAGE_SIZE:
        return message
    return raw[:MAX_MESSAGE_SIZE].decode("utf-8", "ignore")


def _days_ago(days: int) -> str:
    return format_time(time.time() - days * 86400)


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _insert(conn: sqlite3.Connection, rows: list[tuple[str, int, str, str, str]]) -> None:
    """`rows` in statements of up to `_INSERT_ROWS` rows each: `executemany` releases the GIL
    at every row, and each time the event loop's thread takes it back through a futex."""
    for start in range(0, len(rows), _INSERT_ROWS):
        chunk = rows[start : start + _INSERT_ROWS]
        conn.execute(_insert_statement(len(chunk)), [value for row in chunk for value in row])


@functools.cache
def _insert_statement(count: int) -> str:
    return _INSERT + ", (?, ?, ?, ?, ?)" * (count - 1)


def _delete_per_settings(conn: sqlite3.Connection, max_days: int, min_level: int) -> int:
    cur = conn.execute(
        "DELETE FROM `_logs` WHERE `created` <= ? OR `level` < ?", (_days_ago(max_days), min_level)
    )
    return cur.rowcount


class RequestLog:
    """See the module docstring."""

    def __init__(
        self,
        path: Path,
        settings: Callable[[], Mapping[str, Any]],
        *,
        batch_size: int = BATCH_SIZE,
        interval: float = FLUSH_INTERVAL_S,
        external_checkpoints: bool = False,
    ) -> None:
        self.path = path
        self._settings = settings
        self._batch_size = batch_size
        self._interval = interval
        self._external_checkpoints = external_checkpoints
        self._pending: deque[Entry] = deque(maxlen=MAX_PENDING)
        self._wake = threading.Event()  # an entry arrived while the writer was idle
        self._full = threading.Event()  # a batch is full, or maintenance is asked for
        self._open_lock = threading.Lock()
        self._work_lock = threading.Lock()
        self._db: Database | None = None
        self._thread: threading.Thread | None = None
        self._cleanup_requested = False
        self._waiters: list[Future[None]] = []
        self._waiters_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------ adding
    def enabled(self, level: int) -> bool:
        logs = self._settings()
        return bool(logs.get("maxDays")) and level >= int(logs.get("minLevel") or 0)

    def add(self, level: int, message: str, data: dict[str, Any]) -> None:
        """Queue one entry (see the module docstring); the caller checked `enabled(level)`."""
        if self._closed:
            return
        pending = self._pending
        pending.append((time.time(), level, message, data))
        size = len(pending)
        if size == 1:
            if self._thread is None:
                self._start()
            if not self._wake.is_set():
                self._wake.set()
        elif size >= self._batch_size and not self._full.is_set():
            self._full.set()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", message, data)

    def _start(self) -> None:
        with self._open_lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            if not self._pending and not self._cleanup_requested:
                self._wake.wait()  # idle: no timer runs until the next entry
            self._wake.clear()
            if not self._closed:
                self._full.wait(self._interval)  # the batch fills meanwhile
            self._full.clear()
            if self._closed:
                break
            try:
                self._work()
            except Exception:
                log.exception("failed to write the request log")

    # ------------------------------------------------------------------ writing
    def _database(self) -> Database:
        db = self._db
        if db is not None:
            return db
        with self._open_lock:
            if self._db is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = Database(self.path, readers=2, autocheckpoint=not self._external_checkpoints)
                db.write_sync(_create_schema)
                self._db = db
                self._cleanup_requested = True  # as PocketBase at every start
            return self._db

    def _work(self) -> None:
        """Write what is queued, then run the maintenance asked for (one caller at a time)."""
        with self._work_lock:
            batch: list[Entry] = []
            pop = self._pending.popleft
            with contextlib.suppress(IndexError):
                while True:
                    batch.append(pop())
            logs = self._settings()
            max_days = int(logs.get("maxDays") or 0)
            if batch and max_days:
                self._write(batch, int(logs.get("maxDataSize") or 0) or DEFAULT_MAX_DATA_SIZE)
            if self._cleanup_requested and self._db is not None:
                self._cleanup_requested = False
                with self._waiters_lock:
                    waiters, self._waiters = self._waiters, []
                try:
                    self._cleanup(max_days, int(logs.get("minLevel") or 0))
                finally:
                    for waiter in waiters:
                        waiter.set_result(None)

    def _write(self, batch: list[Entry], max_data: int) -> None:
        ids = new_ids(len(batch))
        rows = [
            (ids[i], level, _cut_message(message), encode_data(data, max_data), format_time(t))
            for i, (t, level, message, data) in enumerate(batch)
        ]
        self._database().write_sync(lambda conn: _insert(conn, rows))

    def _cleanup(self, max_days: int, min_level: int) -> None:
        db = self._database()
        deleted = db.write_sync(lambda conn: _delete_per_settings(conn, max_days, min_level))
        if max_days == 0 and deleted:
            self._vacuum()

    def _vacuum(self) -> None:
        """Give the freed pages back (VACUUM cannot run in the writer's transactions)."""
        try:
            with contextlib.closing(sqlite3.connect(str(self.path), timeout=10)) as conn:
                conn.execute("VACUUM")
        except sqlite3.Error as exc:
            log.debug("failed to vacuum the log database: %s", exc)

    def flush(self) -> None:
        """See the module docstring."""
        self._work()
        if self._db is not None:
            self._db.write_sync(lambda conn: None)  # after every write queued before

    def settings_reloaded(self) -> Future[None]:
        """See the module docstring; the future resolves once the cleanup is done."""
        done: Future[None] = Future()
        self._cleanup_requested = True
        if self._db is None or self._closed:
            done.set_result(None)  # opening the database cleans up anyway
            return done
        with self._waiters_lock:
            self._waiters.append(done)
        if self._thread is None:
            self._start()
        self._wake.set()
        self._full.set()
        return done

    def delete_expired(self) -> int:
        """Delete the entries created `maxDays` days ago or earlier; how many (blocking)."""
        days = int(self._settings().get("maxDays") or 0)
        date = _days_ago(days)
        return self._database().write_sync(
            lambda conn: conn.execute("DELETE FROM `_logs` WHERE `created` <= ?", (date,)).rowcount
        )

    async def truncate(self) -> None:
        """Delete every entry, then vacuum (`DELETE /api/logs`)."""
        db = await asyncio.to_thread(self._database)
        await db.write(lambda conn: conn.execute("DELETE FROM `_logs`").rowcount)
        await asyncio.to_thread(self._vacuum)

    # ------------------------------------------------------------------ reading
    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        db = self._db if self._db is not None else await asyncio.to_thread(self._database)
        return await db.read(fn)

    def recent(self, n: int = 100) -> list[dict[str, Any]]:
        self.flush()

        def newest(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            sql = (
                "SELECT `id`, `created`, `data`, `message`, `level` FROM `_logs`"
                " ORDER BY `_rowid_` DESC LIMIT ?"
            )
            return [
                {"id": r[0], "created": r[1], "data": orjson.loads(r[2]), "message": r[3],
                 "level": r[4]}
                for r in conn.execute(sql, (n,))
            ]  # fmt: skip

        return self._database().read_sync(newest)

    # ------------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """See the module docstring."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._full.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            self._work()
        except Exception:
            log.exception("failed to write the request log")
        if self._db is not None:
            self._db.close()


def cleanup_logs(app: App) -> Future[int]:
    """PocketBase's `__pbLogsCleanup__` job: delete `app`'s log entries older than `maxDays`
    days, in a thread of its own; returns at once (callable from the event loop or a
    scheduler's thread) with a future of how many were deleted."""
    future: Future[int] = Future()

    def run() -> None:
        try:
            future.set_result(app.request_log.delete_expired())
        except BaseException as exc:
            log.warning("Failed to delete old logs: %s", exc)
            future.set_exception(exc)

    threading.Thread(target=run, name="logs-cleanup", daemon=True).start()
    return future
