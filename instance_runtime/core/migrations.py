"""Migrations of the pocketfleet engine: `pb_migrations/*.py`, as PocketBase's JS migrations.

    # pb_migrations/1700000000_add_posts.py
    from instance_runtime.hooks import MigrationApp

    def up(app: MigrationApp) -> None:
        app.collections.save({"name": "posts", "fields": [{"name": "title", "type": "text"}]})

    def down(app: MigrationApp) -> None:
        app.collections.delete("posts")

Contract:

- `load(folder)`: the migrations of `folder` (none when it does not exist): every `*.py` file
  directly in it, in file-name order, each executed in memory as its own module (nothing is
  written into the folder). A file must define a plain function `up(app)`, and may define
  `down(app)` (without it, reverting the migration only forgets it, as PocketBase's `null`
  down). A file that does not compile, raises while it runs, or lacks `up` is a
  `MigrationError` naming it — raised before anything is applied.
- `Runner(runtime, migrations)` works on PocketBase's `_migrations` table (same schema:
  `file VARCHAR(255) PRIMARY KEY NOT NULL, applied INTEGER NOT NULL`, `applied` in Unix
  microseconds), created when missing. The table also holds PocketBase's own rows (its `.go`
  system migrations, which the bootstrap records in every data folder,
  `core.system_collections.adopt`; `.js` migrations when PocketBase ran the folder): the
  runner applies, reverts and forgets only `.py` files (`applied()` lists every row).
  - `up()` applies, in file-name order, every migration without a row, and records each; as
    PocketBase, all of them in ONE write transaction: a migration that raises rolls back the
    whole batch (nothing half-applied, no row written) as `MigrationError("failed to apply
    migration FILE: ...")`. Returns the files applied.
  - `down(count=1)` reverts the last `count` applied migrations among the loaded ones (latest
    `applied` first, then file name descending; a negative count: all), each `down(app)` then
    its row deleted, again in one transaction. Returns the files reverted.
  - `last_applied(limit)` are the files `down(limit)` would revert; `applied()` every row.
  - `history_sync()` deletes the rows of `.py` migrations whose file is gone; rows of other
    engines' migrations (PocketBase's `.go` system migrations, `.js` files) are not this
    engine's to judge and stay. Returns the files forgotten.
- Each migration's `app` is a `hooks.services.MigrationApp` on the transaction: records,
  collections and raw SQL, through the same services (validation, model hooks) as the API.
  After the commit the runtime's schema is the reloaded one.
- `apply_at_start(runtime, folder)`: `up()` with the folder's migrations (what `serve` runs
  before it listens); logs each file applied.
- `record_applied(conn, file)` inserts a row (automigrate: the files it writes are applied).
"""

from __future__ import annotations

import inspect
import logging
import sqlite3
import sys
import time
import traceback
import types
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.schema import Schema
from instance_runtime.core.system_collections import MIGRATIONS_SCHEMA, MIGRATIONS_TABLE
from instance_runtime.hooks.services import MigrationApp

log = logging.getLogger("instance_runtime.migrations")

TABLE = MIGRATIONS_TABLE
EXTENSION = ".py"
_CREATE_TABLE = MIGRATIONS_SCHEMA
_MODULE_PREFIX = "pb_migrations."

MigrationFn = Callable[[MigrationApp], Any]


class MigrationError(Exception):
    """A migration that could not be loaded, applied or reverted (the message says which)."""


@dataclass(frozen=True)
class Migration:
    file: str
    up: MigrationFn
    down: MigrationFn | None = None
    path: Path | None = None  # where it was loaded from (errors name the line)


# ---------------------------------------------------------------------------- loading
def files_of(folder: Path) -> list[Path]:
    """The migration files of `folder`, in file-name order (none when it does not exist)."""
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise MigrationError(f"failed to read the migrations folder {folder}: {exc}") from exc
    return sorted(
        (p for p in entries if p.name.endswith(EXTENSION) and p.is_file()), key=lambda p: p.name
    )


def load(folder: Path) -> list[Migration]:
    """See the module docstring."""
    return [load_file(path) for path in files_of(folder)]


def load_file(path: Path) -> Migration:
    name = path.name
    try:
        source = path.read_bytes()
        code = compile(source, str(path), "exec", dont_inherit=True)
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        raise MigrationError(
            f"failed to load migration {name}: SyntaxError: {exc.msg}{where}"
        ) from exc
    except (OSError, ValueError) as exc:
        raise MigrationError(f"failed to load migration {name}: {exc}") from exc
    module = types.ModuleType(_MODULE_PREFIX + path.stem)
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # while it runs (dataclasses, typing look it up)
    try:
        exec(code, module.__dict__)
    except Exception as exc:
        raise MigrationError(f"failed to load migration {name}: {describe(exc, path)}") from exc
    finally:
        sys.modules.pop(module.__name__, None)
    up = module.__dict__.get("up")
    down = module.__dict__.get("down")
    if not callable(up):
        raise MigrationError(f"failed to load migration {name}: it defines no up(app) function")
    if down is not None and not callable(down):
        raise MigrationError(f"failed to load migration {name}: down is not a function")
    for label, fn in (("up", up), ("down", down)):
        if fn is not None and inspect.iscoroutinefunction(fn):
            raise MigrationError(
                f"failed to load migration {name}: {label}(app) must be a plain def, not async"
            )
    return Migration(name, up, down, path)


def describe(exc: BaseException, path: Path | None = None) -> str:
    """An error in one line: PocketBase's message and data for an `ApiError`, else the type
    and text; with `path`, where in that file it was raised."""
    if isinstance(exc, ApiError):
        text = exc.message
        if exc.data:
            text += " " + orjson.dumps(exc.data, option=orjson.OPT_SORT_KEYS).decode()
    else:
        detail = str(exc)
        text = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if path is not None:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == str(path)]
        if frames:
            text += f" (at {path.name}:{frames[-1].lineno})"
    return text


# ---------------------------------------------------------------------------- the table
def ensure_table(conn: sqlite3.Connection) -> None:
    conn.execute(_CREATE_TABLE)


def now_micro() -> int:
    return time.time_ns() // 1000


def record_applied(conn: sqlite3.Connection, file: str) -> None:
    ensure_table(conn)
    conn.execute(f"INSERT INTO `{TABLE}` (file, applied) VALUES (?, ?)", (file, now_micro()))


def _is_applied(conn: sqlite3.Connection, file: str) -> bool:
    found = conn.execute(f"SELECT 1 FROM `{TABLE}` WHERE file = ? LIMIT 1", (file,)).fetchone()
    return found is not None


def _forget(conn: sqlite3.Connection, file: str) -> None:
    conn.execute(f"DELETE FROM `{TABLE}` WHERE file = ?", (file,))


# ---------------------------------------------------------------------------- the runner
class Runner:
    """See the module docstring."""

    def __init__(self, runtime: App, migrations: list[Migration]) -> None:
        self._runtime = runtime
        self._migrations = sorted(migrations, key=lambda m: m.file)
        self._by_file = {m.file: m for m in self._migrations}

    @property
    def migrations(self) -> list[Migration]:
        return list(self._migrations)

    def up(self) -> list[str]:
        """See the module docstring."""
        hooks = self._runtime.hooks
        self._runtime.write_sync(lambda conn, schema: ensure_table(conn))  # kept on failure

        def run(conn: sqlite3.Connection, schema: Schema) -> tuple[list[str], Schema]:
            app = MigrationApp(conn, schema, hooks)
            applied: list[str] = []
            for migration in self._migrations:
                if _is_applied(conn, migration.file):
                    continue
                try:
                    migration.up(app)
                except Exception as exc:
                    raise MigrationError(
                        f"failed to apply migration {migration.file}: "
                        f"{describe(exc, migration.path)}"
                    ) from exc
                record_applied(conn, migration.file)
                applied.append(migration.file)
            return applied, Schema.load(conn)

        applied, schema = self._runtime.write_sync(run)
        self._runtime.schema = schema
        return applied

    def last_applied(self, limit: int) -> list[str]:
        """The files `down(limit)` reverts, latest first."""
        if limit < 0:
            limit = len(self._migrations)
        files = list(self._by_file)
        if limit == 0 or not files:
            return []

        def run(conn: sqlite3.Connection, schema: Schema) -> list[str]:
            ensure_table(conn)
            marks = ",".join("?" * len(files))
            rows = conn.execute(
                f"SELECT file FROM `{TABLE}` WHERE applied IS NOT NULL AND file IN ({marks}) "
                # PocketBase's order: seconds and microseconds alike, then the name
                "ORDER BY substr(applied||'0000000000000000', 0, 17) DESC, file DESC LIMIT ?",
                (*files, limit),
            )
            return [str(row[0]) for row in rows]

        return self._runtime.write_sync(run)

    def down(self, count: int = 1) -> list[str]:
        """See the module docstring."""
        names = self.last_applied(count)
        if not names:
            return []
        hooks = self._runtime.hooks

        def run(conn: sqlite3.Connection, schema: Schema) -> tuple[list[str], Schema]:
            app = MigrationApp(conn, schema, hooks)
            reverted: list[str] = []
            for name in names:
                migration = self._by_file[name]
                if migration.down is not None:
                    try:
                        migration.down(app)
                    except Exception as exc:
                        raise MigrationError(
                            f"failed to revert migration {migration.file}: "
                            f"{describe(exc, migration.path)}"
                        ) from exc
                _forget(conn, migration.file)
                reverted.append(migration.file)
            return reverted, Schema.load(conn)

        reverted, schema = self._runtime.write_sync(run)
        self._runtime.schema = schema
        return reverted

    def applied(self) -> list[tuple[str, int]]:
        """Every row of `_migrations` (file, applied), in insertion order."""

        def run(conn: sqlite3.Connection, schema: Schema) -> list[tuple[str, int]]:
            ensure_table(conn)
            rows = conn.execute(f"SELECT file, applied FROM `{TABLE}` ORDER BY rowid")
            return [(str(file), int(applied)) for file, applied in rows]

        return self._runtime.write_sync(run)

    def history_sync(self) -> list[str]:
        """See the module docstring."""
        loaded = set(self._by_file)

        def run(conn: sqlite3.Connection, schema: Schema) -> list[str]:
            ensure_table(conn)
            gone = [
                str(row[0])
                for row in conn.execute(f"SELECT file FROM `{TABLE}` ORDER BY rowid")
                if str(row[0]).endswith(EXTENSION) and str(row[0]) not in loaded
            ]
            for file in gone:
                _forget(conn, file)
            return gone

        return self._runtime.write_sync(run)


def apply_at_start(runtime: App, folder: Path) -> list[str]:
    """See the module docstring."""
    applied = Runner(runtime, load(folder)).up()
    for file in applied:
        log.info("Applied migration %s", file)
    return applied
