"""Backups of an instance's data folder (PocketBase 0.40's `core/backup*.go`), without HTTP.

Contract:

- `bind(app)` (at start, with the other binds) makes the app's `Backups`, empties
  `pb_data/.pb_temp_to_delete` (PocketBase does at every start: what an interrupted backup or
  restore left), and schedules the automatic backups (`core.crons.schedule_auto_backup`).
  `backups_of(app)` is that `Backups` (bound on first use if needed). `on_terminate` waits
  for a swap of the data folder in progress to end.
- Where: `Backups.storage()` is `LocalStorage(pb_data/backups)`, or the bucket of
  `settings.backups.s3` when enabled (keys at the bucket's root, as PocketBase), built once per
  configuration (`core.file_storage.build_storage`). Every transfer is streamed.
- One operation at a time: `create` and `restore` run under a busy flag (PocketBase's
  `@activeBackup`); `busy` says whether one runs, `active` the name it was given ("" for a
  backup with a generated name). A second one raises `BusyError`. `with running(name):` holds
  the flag for an operation of the caller's.
- `list()`: every stored key but PocketBase's `.attrs` sidecars, sorted by key, as
  `BackupFile(key, size, modified)`.
- `create(name="")` (blocking) writes the archive (`core.backup_archive.write_archive`, while
  the app serves) into the temp folder and puts it in the storage as `name`, or as
  `generate_name(appName, "pb_backup_")`; an existing key is replaced. `name_taken(name)` is
  PocketBase's uniqueness check (a name the storage cannot hold counts as taken).
- `store(path, name)` puts an uploaded archive (a staged file, moved or uploaded away).
- `stat(key)` / `exists(key)` / `delete(key)` for one backup: a key that cannot be a backup
  of this storage (with `/`, empty, `.`/`..`, a sidecar) never reaches it. `stat` raises
  `BadKey` for the keys PocketBase's storage itself refuses (`.`, `..`, `*.attrs` on local
  disk), else None when missing; `delete` raises `DeleteError` with PocketBase's raw error
  (a missing key on local disk; on S3 a delete of a missing key succeeds, as S3's).
- `start_restore(key)` claims the flag and starts `restore` as a task of the running loop.
  The restore fetches the archive (S3: streamed to the temp folder), extracts and checks it
  (`extract_checked`: a zip, no member outside, a sound `data.db`) into the temp folder, and
  only then closes the `gate` (`core.restart_gate`; the `on_pause` callbacks end long-lived
  streams), waits for the running requests, stops the cron, closes the databases, moves the
  folder's content aside (`backups/` and the temp folder stay) and the extracted one in, and
  reopens the app in place (`App.reopen`, then the `on_restored` callbacks, e.g. the
  migrations a start applies). If that fails, the old content is moved back and reopened.
  A failure at any step is logged as PocketBase's `Failed to restore backup` (ERROR,
  `{key, error}`) and leaves the data as it was.
- `auto_backup()` (the `__pbAutoBackup__` job) creates `generate_name(appName,
  "@auto_pb_backup_")`, then keeps only the `cronMaxKeep` newest `@auto_pb_backup_*` keys; a
  failure is logged as `[Backup cron] Failed to create backup` and mailed to every superuser
  (PocketBase's system alert), the cleanup runs anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import string
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from instance_runtime.core import crons, file_storage
from instance_runtime.core.app import App
from instance_runtime.core.backup_archive import (
    BACKUPS_DIR,
    RESTORE_EXCLUDE,
    TEMP_DIR,
    ArchiveError,
    extract_checked,
    move_content,
    write_archive,
)
from instance_runtime.core.events import LifecycleEvent
from instance_runtime.core.files import _snakecase
from instance_runtime.core.logs import ERROR
from instance_runtime.core.mails import go_html_escape
from instance_runtime.core.models import format_datetime
from instance_runtime.core.restart_gate import RestartGate
from instance_runtime.tools.filesystem import FileInfo, InvalidKey, Storage, StorageError
from instance_runtime.tools.filesystem.local import LocalStorage
from instance_runtime.tools.mailer import Message

log = logging.getLogger("instance_runtime")

DEFAULT_PREFIX = "pb_backup_"
AUTO_PREFIX = "@auto_pb_backup_"
NAME_PATTERN = re.compile(r"^[a-z0-9_-]+\.zip$")
ATTRS = ".attrs"  # PocketBase's local metadata sidecars
ZIP_TYPE = "application/zip"
ORIGINAL_NAME = "original-filename"
BUSY = "try again later - another backup/restore operation has already been started"
DRAIN_TIMEOUT_S = 10.0
SWAP_WAIT_S = 120.0
_ALNUM = string.ascii_letters + string.digits


class BusyError(Exception):
    """Another backup or restore is running."""

    def __init__(self) -> None:
        super().__init__(BUSY)


class BadKey(Exception):
    """A key PocketBase's storage refuses outright (its raw error as the message)."""


class DeleteError(Exception):
    """A delete that failed (PocketBase's raw error as the message)."""


@dataclass(frozen=True)
class BackupFile:
    key: str
    size: int
    modified: datetime

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "modified": format_datetime(self.modified)}


def generate_name(app_name: str, prefix: str, now: datetime | None = None) -> str:
    """PocketBase's `generateBackupName`: `PREFIX{snake app name, 50 at most}_{UTC stamp}.zip`."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{prefix}{_snakecase(app_name)[:50]}_{moment.strftime('%Y%m%d%H%M%S')}.zip"


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _plain_key(key: str) -> bool:
    """A key that can name a backup here: one path segment, nothing a storage would refuse."""
    return bool(key) and "/" not in key and key not in (".", "..") and "\x00" not in key


def _escaped(key: str) -> str:
    """How PocketBase's local storage names the file of `key` (`fileblob.escapeKey`)."""
    out = "".join(f"__0x{ord(c):x}__" if ord(c) < 0x20 else c for c in key)
    return out.replace("../", "..__0x2f__")


_SYSTEM_ALERT = """<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" \
"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
<html xmlns="http://www.w3.org/1999/xhtml">
<head>
    <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
    <meta name="viewport" content="width=device-width,initial-scale=1" />
</head>
<body>
	<p>{app} system alert occurred:</p>
	<p class="alert"><strong>{details}</strong></p>
	<p>For more information you could explore the logs in the dashboard of your application.</p>
</body>
</html>"""


def _template_escape(text: str) -> str:
    """Go's `html/template` escaping of text (`+` too)."""
    return go_html_escape(text).replace("+", "&#43;")


class Backups:
    """See the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.gate = RestartGate()
        self._lock = threading.Lock()
        self._busy = False
        self._active = ""
        self._storage: tuple[Any, Storage] | None = None
        self._tasks: set[asyncio.Task[bool]] = set()
        self._on_pause: list[Callable[[], None]] = []
        self._on_restored: list[Callable[[], object]] = []
        self.swapping = threading.Lock()  # held while the data folder is swapped

    # --- state ----------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._busy

    @property
    def active(self) -> str:
        return self._active

    def _claim(self, name: str) -> None:
        with self._lock:
            if self._busy:
                raise BusyError()
            self._busy, self._active = True, name

    def _release(self) -> None:
        with self._lock:
            self._busy, self._active = False, ""

    @contextlib.contextmanager
    def running(self, name: str) -> Iterator[None]:
        """The busy flag, held for an operation named `name` ("" if unnamed) while the block
        runs; `BusyError` when another one holds it."""
        self._claim(name)
        try:
            yield
        finally:
            self._release()

    def on_pause(self, fn: Callable[[], None]) -> None:
        """Run `fn` when a restore closes the gate (before it waits for running requests)."""
        self._on_pause.append(fn)

    def on_restored(self, fn: Callable[[], object]) -> None:
        """Run `fn` (blocking, in the restore's thread) once the restored folder is open and
        before requests resume, as a start would (e.g. the migrations of `pb_migrations`);
        when it raises, the restore is reverted."""
        self._on_restored.append(fn)

    # --- storage --------------------------------------------------------------------------

    def storage(self) -> Storage:
        s3 = dict((self.app.settings.current.get("backups") or {}).get("s3") or {})
        key = file_storage.s3_config_key(s3)
        with self._lock:
            if self._storage is None or self._storage[0] != key:
                root = self.app.data_dir / BACKUPS_DIR
                try:
                    self._storage = (key, file_storage.build_storage(s3, root))
                except Exception as exc:  # a malformed endpoint...
                    raise StorageError(f"failed to load the backups filesystem: {exc}") from exc
            return self._storage[1]

    def temp_dir(self) -> Path:
        """`pb_data/.pb_temp_to_delete` (created), where archives are staged."""
        temp = self.app.data_dir / TEMP_DIR
        temp.mkdir(parents=True, exist_ok=True)
        return temp

    def list(self) -> list[BackupFile]:
        storage = self.storage()
        sidecars = isinstance(storage, LocalStorage)  # only PocketBase's local disk has them
        return [
            BackupFile(e.key, e.info.size, e.info.modified)
            for e in storage.entries("")
            if not (sidecars and e.key.endswith(ATTRS))
        ]

    def name_taken(self, name: str) -> bool:
        if not _plain_key(name) or name.endswith(ATTRS):
            return True
        try:
            return self.storage().exists(name)
        except StorageError:
            return True

    def stat(self, key: str) -> FileInfo | None:
        storage = self.storage()
        local = isinstance(storage, LocalStorage)
        if key in (".", ".."):
            raise BadKey(f'[key: {key}] fileblob: key "{key}" escapes bucket root')
        if local and key.endswith(ATTRS):
            raise BadKey(f'[key: {key}] file extension "{ATTRS}" is reserved')
        if not _plain_key(key):
            return None
        try:
            return storage.stat(key)
        except InvalidKey:
            return None

    def exists(self, key: str) -> bool:
        try:
            return self.stat(key) is not None
        except (BadKey, StorageError):
            return False

    def delete(self, key: str) -> None:
        storage = self.storage()
        if not isinstance(storage, LocalStorage):
            if _plain_key(key):
                with contextlib.suppress(InvalidKey):
                    storage.delete(key)
            return
        if key.endswith(ATTRS) or key in (".", ".."):
            self.stat(key)  # raises BadKey
        try:
            found = _plain_key(key) and storage.stat(key) is not None
        except InvalidKey:
            found = False
        if not found:
            where = os.path.normpath(f"{os.path.abspath(storage.root)}/{_escaped(key)}")
            raise DeleteError(
                f"[key: {key}] remove {where}: no such file or directory\nresource not found"
            )
        storage.delete(key)
        storage.delete(key + ATTRS)  # PocketBase's sidecar, when it made the backup

    # --- create ---------------------------------------------------------------------------

    def create(self, name: str = "") -> str:
        """See the module docstring (blocking); the name it was stored under."""
        with self.running(name):
            name = name or generate_name(self._app_name(), DEFAULT_PREFIX)
            zip_path = self.temp_dir() / f"pb_backup_{_random(6)}"
            try:
                holder = file_storage.storage_of(self.app)
                write_archive(self.app, zip_path, holder.removals_held())
                self.store(zip_path, name)
            finally:
                zip_path.unlink(missing_ok=True)
            log.debug("backup %s created", name)
            return name

    def store(self, path: Path, name: str) -> None:
        """Put the archive `path` in the storage as `name` (`path` is consumed)."""
        metadata = {ORIGINAL_NAME: name[:255]}
        self.storage().put(name, path, ZIP_TYPE, metadata)

    def _app_name(self) -> str:
        return str((self.app.settings.current.get("meta") or {}).get("appName") or "")

    # --- restore --------------------------------------------------------------------------

    def start_restore(self, key: str) -> asyncio.Task[bool]:
        """See the module docstring (call it on the running loop); raises `BusyError`."""
        self._claim(key)
        try:
            task = asyncio.get_running_loop().create_task(self._restore(key))
        except BaseException:
            self._release()
            raise
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def restore(self, key: str) -> bool:
        """Claim, restore and wait for it: True once the app serves the restored data."""
        self._claim(key)
        return await self._restore(key)

    async def _restore(self, key: str) -> bool:
        try:
            extracted = await asyncio.to_thread(self._extracted, key)
            try:
                async with self.gate.closed(DRAIN_TIMEOUT_S, self._on_pause):
                    old = await asyncio.to_thread(self._swap, extracted)
                    self._release()  # requests resume on an app with no operation running
            finally:
                await asyncio.to_thread(shutil.rmtree, extracted, True)
            await asyncio.to_thread(shutil.rmtree, old, True)
            log.info("backup %s restored", key)
            return True
        except Exception as exc:
            log.error("Failed to restore backup %s: %s", key, exc)
            self._log_error("Failed to restore backup", {"key": key, "error": str(exc)})
            return False
        finally:
            self._release()

    def _extracted(self, key: str) -> Path:
        """The archive `key` extracted and checked in the temp folder (blocking)."""
        temp = self.temp_dir()
        dest = temp / f"pb_restore_{_random(8)}"
        storage = self.storage()
        downloaded: Path | None = None
        try:
            if not self.exists(key):
                raise ArchiveError(f'missing or invalid backup file "{key}" to restore')
            if isinstance(storage, LocalStorage):
                zip_path = storage.path(key)
            else:
                downloaded = zip_path = temp / f"pb_restore_zip_{_random(8)}"
                with storage.open(key) as reader, open(zip_path, "xb") as out:
                    for chunk in reader:
                        out.write(chunk)
            extract_checked(zip_path, dest)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        finally:
            if downloaded is not None:
                downloaded.unlink(missing_ok=True)
        return dest

    def _swap(self, extracted: Path) -> Path:
        """Replace the data folder's content by `extracted` and reopen the app (blocking);
        the folder the old content went to."""
        with self.swapping:
            return self._swap_held(extracted)

    def _swap_held(self, extracted: Path) -> Path:
        app = self.app
        data = app.data_dir
        old = self.temp_dir() / f"old_pb_data_{_random(8)}"
        cron_was_running = app.cron.has_started
        app.cron.stop()
        try:
            app.close_databases()
            try:
                move_content(data, old, RESTORE_EXCLUDE)
                try:
                    move_content(extracted, data, RESTORE_EXCLUDE)
                except OSError:
                    move_content(old, data, RESTORE_EXCLUDE)
                    raise
            except BaseException:
                app.reopen()
                raise
            try:
                app.reopen()
                for fn in self._on_restored:
                    fn()
            except Exception as exc:
                log.exception("the restored data folder does not open: reverting")
                with contextlib.suppress(Exception):
                    app.close_databases()
                move_content(data, extracted, RESTORE_EXCLUDE)
                move_content(old, data, RESTORE_EXCLUDE)
                app.reopen()
                raise ArchiveError(f"failed to restart the app: {exc}") from exc
            return old
        finally:
            if cron_was_running:
                app.cron.start()

    # --- automatic backups ----------------------------------------------------------------

    def auto_backup(self) -> None:
        """See the module docstring (blocking: the cron runs it in a thread of its own)."""
        name = generate_name(self._app_name(), AUTO_PREFIX)
        try:
            self.create(name)
        except Exception as exc:
            log.error("[Backup cron] Failed to create backup %s: %s", name, exc)
            self._log_error(
                "[Backup cron] Failed to create backup", {"name": name, "error": str(exc)}
            )
            self._alert(
                "Autobackup failure",
                "Failed to create/upload automated backup. Raw error:\n" + str(exc),
            )
        max_keep = int((self.app.settings.current.get("backups") or {}).get("cronMaxKeep") or 0)
        if not max_keep:
            return
        try:
            storage = self.storage()
            found = [e for e in storage.entries(AUTO_PREFIX) if not e.key.endswith(ATTRS)]
        except StorageError as exc:
            log.error("[Backup cron] Failed to list autogenerated backups: %s", exc)
            return
        found.sort(key=lambda e: e.info.modified, reverse=True)
        for entry in found[max_keep:]:
            try:
                storage.delete(entry.key)
                if isinstance(storage, LocalStorage):
                    storage.delete(entry.key + ATTRS)
            except StorageError as exc:
                log.error("[Backup cron] Failed to remove old backup %s: %s", entry.key, exc)

    def _log_error(self, message: str, data: dict[str, Any]) -> None:
        request_log = self.app.request_log
        if request_log.enabled(ERROR):
            request_log.add(ERROR, message, data)

    def _alert(self, subject: str, details: str) -> None:
        """PocketBase's `sendSystemAlertToAllSuperusers` (queued on the app's mailer)."""
        meta = self.app.settings.current.get("meta") or {}
        app_name = str(meta.get("appName") or "")
        try:
            emails = self.app.db.read_sync(
                lambda conn: [str(r[0]) for r in conn.execute("SELECT email FROM _superusers")]
            )
        except Exception as exc:
            log.warning("[Backup cron] Failed to send backup error alerts: %s", exc)
            return
        page = _SYSTEM_ALERT.format(
            app=_template_escape(app_name), details=_template_escape(details)
        )
        for email in emails:
            message = Message(
                from_address=str(meta.get("senderAddress") or ""),
                from_name=str(meta.get("senderName") or ""),
                to=[(email, "")],
                subject=f"[{app_name} system alert] {go_html_escape(subject)}",
                html=page,
            )
            self.app.mailer.send(message)


# --- binding --------------------------------------------------------------------------------

_of_app: weakref.WeakKeyDictionary[App, Backups] = weakref.WeakKeyDictionary()
_bind_lock = threading.Lock()


def bind(app: App) -> Backups:
    """See the module docstring (idempotent)."""
    with _bind_lock:
        found = _of_app.get(app)
        if found is not None:
            return found
        backups = _of_app[app] = Backups(app)
    shutil.rmtree(app.data_dir / TEMP_DIR, ignore_errors=True)
    crons.schedule_auto_backup(app, backups.auto_backup)

    def terminating(e: LifecycleEvent) -> Any:
        # a swap of the data folder in progress ends before the app closes its databases
        if backups.swapping.acquire(timeout=SWAP_WAIT_S):
            backups.swapping.release()
        return e.next()

    app.hooks.on_terminate.bind(terminating, id="pfBackupsTerminate", priority=-100)
    return backups


def backups_of(app: App) -> Backups:
    return bind(app)
