"""The runtime's application object (PocketBase's `core.App`): data folder, database, schema.

Contract:

- `App(data_dir)` opens (creating if needed) `data_dir/data.db`, bootstraps the system
  collections in a new database and loads the `Schema`. `close()` drains writes and
  checkpoints.
- A data folder it makes or opens is one PocketBase 0.40 opens as its own (`_bootstrap`, in
  one transaction at every start and reopen): PocketBase's `_params` with its `settings` row
  and its system migrations recorded in `_migrations` (`core.system_collections.adopt`: a
  folder an earlier version of this engine made gets them too).
- `app.schema` is the current immutable `Schema` snapshot; `await app.write(fn)` runs
  `fn(conn, schema)` in a write transaction; `write_schema(fn)` does the same for a change of
  collections: `fn` returns `SchemaChange(value, schema)` with the schema reloaded inside the
  transaction, which the app installs once it has committed. `await app.read(fn)` runs
  `fn(conn, schema)` on a reader (with `inline_key=KEY`, a short read, first in the calling
  thread: `core.db`).
- `app.hooks` holds every event hook (`core.app_hooks`); `app.settings` the in-memory settings
  (`core.settings`), loaded at start; `app.rate_limiters` and `app.request_log` (the log in
  `data_dir/auxiliary.db`, `core.logs`) serve the request pipeline (`apis.middlewares`);
  `app.mailer` sends mail in the background with the current SMTP settings, every message
  through `on_mailer_send`. `app.cron` is the app's scheduler (`tools.cron`; its system jobs,
  start and stop: `core.crons`).
- `await app.save_settings(values)` stores new settings, then installs them, has the request
  log drop what they no longer keep and triggers `on_settings_reload`.
- At start the staged uploads a crashed process left are removed (`core.staging_sweep`).
- `close_databases()` / `reopen()` restart the app in place on a new content of its data
  folder (a restored backup, `core.backups`): the hooks, cron and mailer stay.
- Inside a write, `on_commit(fn)` defers `fn()` until the transaction has committed (it runs in
  the caller's thread after `write` returns; a write that fails drops its deferred calls). The
  `..._success` events are sent this way. A deferred call of `await app.write(...)` may hand
  `settle(awaitable)` work that the write waits for before it returns (the realtime judging of
  a saved record, as PocketBase's request waits for it: the answer, hence the client's next
  write, comes after it).
- With `PF_CHECKPOINTS=external` in the environment (the control plane sets it when Litestream
  replicates the instance, and Litestream checkpoints), the runtime never checkpoints its
  database itself (see `core.db`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sqlite3
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from instance_runtime.core import settings as settings_store
from instance_runtime.core import staging_sweep, system_collections
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.db import Database
from instance_runtime.core.events import MailerEvent, SettingsReloadEvent
from instance_runtime.core.logs import RequestLog
from instance_runtime.core.mails import Mailer
from instance_runtime.core.schema import Schema, bootstrap
from instance_runtime.tools.cron import Cron
from instance_runtime.tools.mailer import Message
from instance_runtime.tools.rate_limit import RateLimiters

T = TypeVar("T")

CHECKPOINTS_ENV = "PF_CHECKPOINTS"

log = logging.getLogger("instance_runtime")

Deferred = list[Callable[[], None]]
_deferred: contextvars.ContextVar[Deferred | None] = contextvars.ContextVar(
    "pf_deferred", default=None
)
_settling: contextvars.ContextVar[list[Awaitable[object]] | None] = contextvars.ContextVar(
    "pf_settling", default=None
)


def on_commit(fn: Callable[[], None]) -> None:
    """See the module docstring: only valid inside a write of `App`."""
    pending = _deferred.get()
    if pending is None:
        raise RuntimeError("on_commit() outside of a write transaction")
    pending.append(fn)


def settle(awaitable: Awaitable[object]) -> bool:
    """See the module docstring: False (nothing waits) outside the deferred calls of an
    `await app.write`."""
    waits = _settling.get()
    if waits is None:
        return False
    waits.append(awaitable)
    return True


def _run_deferred(pending: Deferred) -> None:
    for fn in pending:
        try:
            fn()
        except Exception:
            log.exception("an after-commit handler failed")


async def _run_deferred_settled(pending: Deferred) -> None:
    """`_run_deferred`, then wait for what they handed `settle` (their failures are theirs
    to report: the write has committed)."""
    waits: list[Awaitable[object]] = []
    token = _settling.set(waits)
    try:
        _run_deferred(pending)
    finally:
        _settling.reset(token)
    if waits:
        await asyncio.gather(*waits, return_exceptions=True)


def _bootstrap(conn: sqlite3.Connection) -> None:
    """The system collections of a new database, then what PocketBase 0.40 would add to a
    data folder it made: `_params` with the settings, its migrations' rows."""
    bootstrap(conn)
    recorded = system_collections.adopt(conn)
    if recorded:
        log.info("Recorded PocketBase's system migrations %s", ", ".join(recorded))
    stored = conn.execute("SELECT 1 FROM _params WHERE id = 'settings'").fetchone()
    if stored is None:  # PocketBase stores its defaults at the first start
        settings_store.store(conn, settings_store.load(conn))


@dataclass
class SchemaChange(Generic[T]):
    """Returned by a write that changed collections: its value and the schema after it."""

    value: T
    schema: Schema


class App:
    """See the module docstring."""

    def __init__(
        self, data_dir: Path, *, readers: int = 3, external_checkpoints: bool | None = None
    ) -> None:
        self.data_dir = data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        self._staging = staging_sweep.claim(data_dir)  # crashed uploads removed
        if external_checkpoints is None:
            external_checkpoints = os.environ.get(CHECKPOINTS_ENV) == "external"
        self._readers = readers
        self._external_checkpoints = external_checkpoints
        self.db, self.schema, values, self.request_log = self._open_databases()
        self.settings = settings_store.Settings(values)
        self.hooks = AppHooks()
        self.rate_limiters = RateLimiters()
        self.cron = Cron()
        self.mailer = Mailer(lambda: self.settings.current, before_send=self._before_send)
        # Bumped after every committed write that may change an auth record (token cache key).
        self.auth_generation = 0

    def _open_databases(self) -> tuple[Database, Schema, settings_store.Values, RequestLog]:
        db = Database(
            self.data_dir / "data.db",
            readers=self._readers,
            autocheckpoint=not self._external_checkpoints,
        )
        try:
            db.write_sync(_bootstrap)
            schema: Schema = db.write_sync(Schema.load)
            values = db.read_sync(settings_store.load)
        except BaseException:
            db.close()
            raise
        request_log = RequestLog(
            self.data_dir / "auxiliary.db",
            lambda: self.settings.current["logs"],
            external_checkpoints=self._external_checkpoints,
        )
        return db, schema, values, request_log

    def close_databases(self) -> None:
        """Drain and close `data.db` and the request log (before the data folder's content is
        replaced, see `reopen`); reads and writes fail until `reopen`."""
        self.request_log.close()
        self.db.close()

    def reopen(self) -> None:
        """After `close_databases` and a new content of the data folder (a restored backup):
        open the databases again as at start (bootstrap, schema, settings, request log), forget
        the rate limits and cached auths, then trigger `on_settings_reload` (storage, crons).
        Raises what opening raises, leaving the app closed."""
        self.db, self.schema, values, self.request_log = self._open_databases()
        self.settings.replace(values)
        self.rate_limiters.clear()
        self.auth_generation += 1
        self.hooks.on_settings_reload.trigger(SettingsReloadEvent(values), lambda e: None)

    async def read(
        self, fn: Callable[[sqlite3.Connection, Schema], T], *, inline_key: Hashable | None = None
    ) -> T:
        """`inline_key`: a short read tried in this thread first (`Database.read`)."""
        schema = self.schema
        return await self.db.read(lambda conn: fn(conn, schema), inline_key=inline_key)

    def _in_write(
        self, fn: Callable[[sqlite3.Connection], T], pending: Deferred
    ) -> Callable[[sqlite3.Connection], T]:
        def run(conn: sqlite3.Connection) -> T:
            token = _deferred.set(pending)
            try:
                return fn(conn)
            except BaseException:
                pending.clear()
                raise
            finally:
                _deferred.reset(token)

        return run

    async def write(self, fn: Callable[[sqlite3.Connection, Schema], T]) -> T:
        schema = self.schema
        pending: Deferred = []
        result = await self.db.write(self._in_write(lambda conn: fn(conn, schema), pending))
        self.auth_generation += 1
        await _run_deferred_settled(pending)
        return result

    async def write_schema(self, fn: Callable[[sqlite3.Connection, Schema], SchemaChange[T]]) -> T:
        """`write` for a change of collections: installs the new schema after the commit."""
        schema = self.schema
        pending: Deferred = []
        change = await self.db.write(self._in_write(lambda conn: fn(conn, schema), pending))
        self.auth_generation += 1
        self.schema = change.schema
        await _run_deferred_settled(pending)
        return change.value

    def write_sync(self, fn: Callable[[sqlite3.Connection, Schema], T]) -> T:
        schema = self.schema
        pending: Deferred = []
        result = self.db.write_sync(self._in_write(lambda conn: fn(conn, schema), pending))
        self.auth_generation += 1
        _run_deferred(pending)
        return result

    async def save_settings(self, values: settings_store.Values) -> None:
        """Store `values` as the settings, then install them and trigger `on_settings_reload`."""
        await self.db.write(lambda conn: settings_store.store(conn, values))
        self.settings.replace(values)
        self.rate_limiters.clear()
        await asyncio.wrap_future(self.request_log.settings_reloaded())
        self.hooks.on_settings_reload.trigger(SettingsReloadEvent(values), lambda e: None)

    def _before_send(self, message: Message) -> Message | None:
        """Every message passes `on_mailer_send`; a handler may change it or drop it."""
        if not len(self.hooks.on_mailer_send):
            return message
        about = message.context
        event = MailerEvent(
            message, str(about.get("kind", "")), about.get("collection"), about.get("record")
        )
        sent: list[Message] = []
        self.hooks.on_mailer_send.trigger(event, lambda e: sent.append(e.message))
        return sent[0] if sent else None

    def close(self) -> None:
        self.mailer.close(timeout=5.0)
        self.request_log.close()
        self.db.close()
        self._staging.close()
