"""Migration files written by the engine: automigrate, `migrate create` and `migrate collections`
(PocketBase's `plugins/migratecmd`).

Contract:

- `enable(runtime, folder)` turns automigrate on for `runtime` (`serve --automigrate`, on by
  default as PocketBase's `--automigrate`); `enabled(runtime)` is its folder or None.
- `await collection_changed(runtime, old, new)` is called by `/api/collections` after a create
  (`old` None), update or delete (`new` None) has committed — only there: imports, migrations
  and hooks' own collection changes write no file, as PocketBase binds automigrate to the
  create/update/delete request events only. With automigrate on, it writes
  `<unix-ts>_created_<name>.py` / `_updated_<old name>` / `_deleted_<name>` with up and down
  (`core.migration_templates`; an update that changed nothing writes nothing) and records it
  in `_migrations` as applied, in one write transaction (the row is rolled back when the file
  cannot be written). A name ending in `test` gets a `_` (as PocketBase). It never fails the
  request (the change is committed; PocketBase answers it too): a failure is logged.
  Unlike PocketBase (which then loses the migration), a second file in the same second never
  overwrites or sorts before one written before it: its timestamp moves on to the next second.
- `create_file(folder, name, text=None)` writes `<unix-ts>_<snake_case name>.py` (the blank
  template by default) and returns its path; `snapshot_file(runtime, folder)` writes
  `<unix-ts>_collections_snapshot.py`, a snapshot of every collection (system ones too, oldest
  first, as PocketBase's) that recreates them when applied to an empty instance.
- Files are written whole (a temporary file renamed into place).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import tempfile
import time
import weakref
from collections.abc import Iterable
from pathlib import Path

from instance_runtime.core import migration_templates as templates
from instance_runtime.core.app import App
from instance_runtime.core.files import _snakecase
from instance_runtime.core.migrations import EXTENSION, TABLE, ensure_table, record_applied
from instance_runtime.core.models import Collection
from instance_runtime.core.schema import Schema

log = logging.getLogger("instance_runtime.migrations")

_folders: weakref.WeakKeyDictionary[App, Path] = weakref.WeakKeyDictionary()


def enable(runtime: App, folder: Path) -> None:
    """See the module docstring."""
    _folders[runtime] = folder


def enabled(runtime: App) -> Path | None:
    return _folders.get(runtime)


def snakecase(name: str) -> str:
    """PocketBase's `inflector.Snakecase` (`"myTestDB"` -> `"my_test_db"`)."""
    return _snakecase(name)


def _collection_name(name: str) -> str:
    return name + "_" if name.lower().endswith("test") else name


def _prefix(name: str) -> int | None:
    head, _, _ = name.partition("_")
    return int(head) if head.isdigit() else None


def free_name(folder: Path, label: str, now: int | None = None, taken: Iterable[str] = ()) -> str:
    """`<ts>_<label>.py` for the current second, or the next second whose files (in `folder`,
    or `taken`: the files `_migrations` knows) all sort before it (see the module docstring)."""
    ts = int(time.time()) if now is None else now
    try:
        existing = [p.name for p in folder.iterdir() if p.name.endswith(EXTENSION)]
    except FileNotFoundError:
        existing = []
    existing += [name for name in taken if name.endswith(EXTENSION)]
    while True:
        candidate = f"{ts}_{label}{EXTENSION}"
        if not any(_prefix(n) == ts and n >= candidate for n in existing):
            return candidate
        ts += 1


def write_file(path: Path, text: str) -> None:
    """Write `path` whole (see the module docstring), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_path(folder: Path, name: str, now: int | None = None) -> Path:
    """Where `create_file(folder, name)` writes (at `now`, Unix seconds)."""
    ts = int(time.time()) if now is None else now
    return folder / f"{ts}_{snakecase(name)}{EXTENSION}"


def create_file(
    folder: Path, name: str, text: str | None = None, *, now: int | None = None
) -> Path:
    """See the module docstring."""
    path = file_path(folder, name, now)
    write_file(path, templates.blank() if text is None else text)
    return path


SNAPSHOT_NAME = "collections_snapshot"


def snapshot_file(runtime: App, folder: Path, *, now: int | None = None) -> Path:
    """See the module docstring."""
    collections = sorted(runtime.schema.all(), key=lambda c: c.created)  # stable: rowid next
    return create_file(folder, SNAPSHOT_NAME, templates.snapshot(collections), now=now)


def migration_for(old: Collection | None, new: Collection | None) -> tuple[str, str] | None:
    """The label (`created_posts`) and text of the migration for one change, None if none."""
    if new is None and old is not None:
        return f"deleted_{_collection_name(old.name)}", templates.deleted(old)
    if old is None and new is not None:
        return f"created_{_collection_name(new.name)}", templates.created(new)
    if old is not None and new is not None:
        text = templates.updated(new, old)
        return None if text is None else (f"updated_{_collection_name(old.name)}", text)
    return None


async def collection_changed(runtime: App, old: Collection | None, new: Collection | None) -> None:
    """See the module docstring."""
    folder = enabled(runtime)
    if folder is None:
        return
    try:
        change = migration_for(old, new)
        if change is None:
            return
        label, text = change

        def record(conn: sqlite3.Connection, schema: Schema) -> str:
            ensure_table(conn)
            taken = [str(row[0]) for row in conn.execute(f"SELECT file FROM `{TABLE}`")]
            name = free_name(folder, label, taken=taken)
            record_applied(conn, name)
            write_file(folder / name, text)
            return name

        name = await runtime.write(record)
        log.info("automigrate: wrote %s", name)
    except Exception:
        log.exception("automigrate: failed to write the migration of a collection change")
