"""Which `Storage` holds an instance's record files, from its settings (`settings.s3`).

Contract:

- `bind(app)` (at start, next to the other binds) registers the app's `FileStorage` under its
  data folder and drops the cached backend on `on_settings_reload` and at `on_terminate`.
  `storage_of(app)` is that `FileStorage` (bound on first use if needed).
- `FileStorage.get()` is the backend for the current settings: `S3Storage` (from
  `tools.filesystem.s3`, so boto3 is imported only then) when `s3.enabled`, else
  `LocalStorage(DATA_DIR/storage)`. It is built once and kept until the settings change (a
  replaced S3 client is left to the garbage collector: a download may still be streaming
  through it); `close()` closes the current one.
- `for_connection(conn, data_dir)`: the backend for code that holds only a database connection
  (`core.files` inside a write): the bound app's, else one built from the settings stored in
  that database (tools and tests using `App` without `bind`), cached by configuration.
- `after_commit(storage, fn)` runs `fn(storage)`, a removal of files after a commit: inline for
  local disk (a few unlinks), on the app's single background thread for S3, so the event loop
  never waits on the network. `drain()` waits for the queued ones (used at close and by tests
  of the core). Inside `with holder.removals_held():` (a backup copying `storage/`) the local
  removals wait and run when the block ends, so every file a database snapshot taken in the
  block refers to is still there to be copied.
- `build_storage(s3, local_root)`: `S3Storage` for an enabled `S3Config` dict (`settings.s3` or
  `settings.backups.s3`), else `LocalStorage(local_root)`; `s3_config_key(s3)` is what
  identifies such a configuration (None when it is not enabled), for caches of built backends.
- `check_s3(s3)` is PocketBase's S3 connection test (`POST /api/settings/test/s3`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import sqlite3
import string
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from instance_runtime.core import settings as settings_store
from instance_runtime.core.events import LifecycleEvent, SettingsReloadEvent
from instance_runtime.tools.filesystem import Storage, StorageError
from instance_runtime.tools.filesystem.local import LocalStorage

if TYPE_CHECKING:
    from instance_runtime.core.app import App
    from instance_runtime.tools.filesystem.s3 import S3Config

log = logging.getLogger("instance_runtime")

STORAGE_DIR = "storage"
_ALNUM = string.ascii_letters + string.digits
_Key = tuple[Any, ...]


def s3_config_key(s3: dict[str, Any]) -> _Key | None:
    """See the module docstring."""
    if not s3.get("enabled"):
        return None
    names = ("bucket", "region", "endpoint", "accessKey", "secret")
    return (*(str(s3.get(k) or "") for k in names), bool(s3.get("forcePathStyle")))


def build_storage(s3: dict[str, Any], local_root: Path) -> Storage:
    """See the module docstring."""
    if s3_config_key(s3) is None:
        return LocalStorage(local_root)
    from instance_runtime.tools.filesystem.s3 import S3Config, S3Storage

    config: S3Config = S3Config.from_settings(s3)
    return S3Storage(config)


def _config_key(values: settings_store.Values) -> _Key | None:
    return s3_config_key(values.get("s3") or {})


def _build(data_dir: Path, values: settings_store.Values) -> Storage:
    return build_storage(values.get("s3") or {}, data_dir / STORAGE_DIR)


class FileStorage:
    """See the module docstring."""

    def __init__(self, data_dir: Path, settings: Callable[[], settings_store.Values]) -> None:
        self.data_dir = data_dir
        self._settings = settings
        self._lock = threading.Lock()
        self._current: tuple[_Key | None, Storage] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pending: set[Future[None]] = set()
        self._holds = 0
        self._held: list[tuple[Storage, Callable[[Storage], None]]] = []

    def get(self) -> Storage:
        values = self._settings()
        key = _config_key(values)
        with self._lock:
            if self._current is not None and self._current[0] == key:
                return self._current[1]
            storage = _build(self.data_dir, values)
            self._current = (key, storage)
            return storage

    def reload(self) -> None:
        """Forget the cached backend (the settings changed)."""
        with self._lock:
            self._current = None

    def after_commit(self, storage: Storage, fn: Callable[[Storage], None]) -> None:
        if isinstance(storage, LocalStorage):
            with self._lock:
                if self._holds:
                    self._held.append((storage, fn))
                    return
            _guarded(storage, fn)
            return
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="pf-file-deletes")
            future = self._executor.submit(_guarded, storage, fn)
            self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    @contextlib.contextmanager
    def removals_held(self) -> Iterator[None]:
        """See the module docstring (blocks may nest; the outermost one runs the removals)."""
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                held, self._held = (self._held, []) if not self._holds else ([], self._held)
            for storage, fn in held:
                _guarded(storage, fn)

    def drain(self, timeout: float | None = 30.0) -> None:
        for future in list(self._pending):
            future.exception(timeout)

    def close(self) -> None:
        self.drain()
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)
        with self._lock:
            current, self._current = self._current, None
        if current is not None:
            current[1].close()


def _guarded(storage: Storage, fn: Callable[[Storage], None]) -> None:
    try:
        fn(storage)
    except Exception:
        log.exception("removing files after a commit failed")


_of_app: weakref.WeakKeyDictionary[App, FileStorage] = weakref.WeakKeyDictionary()
_bound: dict[Path, FileStorage] = {}
_unbound: dict[tuple[Path, _Key | None], FileStorage] = {}
_registry_lock = threading.Lock()


def _norm(data_dir: Path) -> Path:
    return Path(data_dir).resolve()


def bind(app: App) -> FileStorage:
    """See the module docstring (idempotent)."""
    with _registry_lock:
        found = _of_app.get(app)
        if found is not None:
            return found
        holder = _of_app[app] = FileStorage(app.data_dir, lambda: app.settings.current)
        _bound[_norm(app.data_dir)] = holder

    def reloaded(e: SettingsReloadEvent) -> Any:
        holder.reload()
        return e.next()

    def terminated(e: LifecycleEvent) -> Any:
        try:
            return e.next()
        finally:
            holder.close()
            with _registry_lock:
                if _bound.get(_norm(app.data_dir)) is holder:
                    del _bound[_norm(app.data_dir)]

    app.hooks.on_settings_reload.bind(reloaded, id="pf_file_storage_reload")
    app.hooks.on_terminate.bind(terminated, id="pf_file_storage_terminate")
    return holder


def storage_of(app: App) -> FileStorage:
    return bind(app)


def holder_for_connection(conn: sqlite3.Connection, data_dir: Path) -> FileStorage:
    """The bound `FileStorage` of `data_dir`, else one for the settings stored in `conn`."""
    norm = _norm(data_dir)
    with _registry_lock:
        found = _bound.get(norm)
    if found is not None:
        return found
    values = settings_store.load(conn)
    key = (norm, _config_key(values))
    with _registry_lock:
        holder = _unbound.get(key)
        if holder is None:
            holder = _unbound[key] = FileStorage(data_dir, lambda: values)
    return holder


def for_connection(conn: sqlite3.Connection, data_dir: Path) -> Storage:
    return holder_for_connection(conn, data_dir).get()


def drain() -> None:
    """Wait for every queued removal (of every app in this process)."""
    with _registry_lock:
        holders = [*_bound.values(), *_unbound.values()]
    for holder in holders:
        holder.drain()


class S3CheckError(Exception):
    """Why `check_s3` failed, worded as PocketBase's `TestS3Filesystem.Submit`."""


def check_s3(s3: dict[str, Any]) -> None:
    """PocketBase's S3 connection test for one `S3Config` (`settings.s3` or
    `settings.backups.s3`): refuses a disabled one, then uploads
    `pb_settings_test_XXXXX/test.txt` (the content type PocketBase detects for it) and
    deletes that prefix (listing and deleting), raising
    `S3CheckError` with PocketBase's wording. Blocking."""
    if not s3.get("enabled"):
        raise S3CheckError("S3 storage filesystem is not enabled")
    from instance_runtime.tools.filesystem.s3 import S3Config, S3Storage

    try:
        storage = S3Storage(S3Config.from_settings(s3))
    except Exception as exc:  # a malformed endpoint, region...
        raise S3CheckError(f"failed to initialize the S3 filesystem: {exc}") from exc
    prefix = "pb_settings_test_" + "".join(secrets.choice(_ALNUM) for _ in range(5))
    try:
        try:
            storage.put_bytes(prefix + "/test.txt", b"test", "text/plain; charset=utf-8")
        except StorageError as exc:
            raise S3CheckError(f"failed to upload a test file: {exc}") from exc
        try:
            storage.delete_prefix(prefix)
        except StorageError as exc:
            raise S3CheckError(f"failed to delete a test file: {exc}") from exc
    finally:
        storage.close()
