"""PocketBase 0.40's system collections, auth-collection defaults and system migrations.

`system_collections.json` was captured from a fresh PocketBase 0.40.6 data folder
(`GET /api/collections`) without `created`/`updated`, which the runtime sets when it bootstraps
a new data folder. `AUTH_DEFAULTS` holds the options of a newly created auth collection.

Contract (a data folder PocketBase 0.40.6 opens as one it made itself):

- `SYSTEM_MIGRATIONS` are the files of PocketBase's own migrations (`migrations/*.go`, in the
  order it applies them), which it records in `data.db`'s `_migrations` (the auxiliary
  database's too). A folder without their rows makes PocketBase run its init migration again,
  which fails on the existing `_collections`.
- `PARAMS_SCHEMA` / `MIGRATIONS_SCHEMA` are PocketBase's `_params` and `_migrations` tables.
- `adopt(conn)` (in the bootstrap transaction, after the system collections exist) creates
  `_migrations` and `_params` as PocketBase's when missing. When `_migrations` has no row of
  PocketBase's own (`*.go`; with one, PocketBase made the folder or it was adopted before:
  that history, and whether a newer PocketBase migration still has to run, is PocketBase's,
  and nothing is changed), it rebuilds a `_params` an earlier version of this engine made with
  other column defaults (rows kept), then, if the schema is what PocketBase's system
  migrations make (`missing_system_schema`; else a warning says what lacks), records each of
  them as applied (Unix microseconds, in order, as PocketBase). Returns the files recorded.
  Rows of this engine's migrations (`*.py`) or of PocketBase's JS ones (`*.js`) stay.
- `missing_system_schema(conn)` names what PocketBase's system migrations would have made that
  the database lacks (empty when none): `_collections` (with its type index), and each system
  collection but `users` with PocketBase's id, as a system collection, with its table, `_otps`
  with its `sentTo` field (PocketBase's `1717233559_v0.23_migrate4.go`).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import orjson

_DATA: dict[str, Any] = orjson.loads((Path(__file__).with_suffix(".json")).read_bytes())

SYSTEM_COLLECTIONS: list[dict[str, Any]] = _DATA["collections"]
AUTH_DEFAULTS: dict[str, Any] = _DATA["authDefaults"]
SYSTEM_MIGRATIONS: tuple[str, ...] = tuple(_DATA["systemMigrations"])

log = logging.getLogger("instance_runtime")

MIGRATIONS_TABLE = "_migrations"
MIGRATIONS_SCHEMA = (
    f"CREATE TABLE IF NOT EXISTS `{MIGRATIONS_TABLE}` "
    "(file VARCHAR(255) PRIMARY KEY NOT NULL, applied INTEGER NOT NULL)"
)
PARAMS_TABLE = "_params"
PARAMS_SCHEMA = f"""CREATE TABLE IF NOT EXISTS `{PARAMS_TABLE}` (
    `id`      TEXT PRIMARY KEY DEFAULT ('r'||lower(hex(randomblob(7)))) NOT NULL,
    `value`   JSON DEFAULT NULL,
    `created` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL,
    `updated` TEXT DEFAULT (strftime('%Y-%m-%d %H:%M:%fZ')) NOT NULL
)"""
# the extension of PocketBase's own migrations: a row of one means PocketBase wrote the history
_POCKETBASE_EXTENSION = ".go"
_OTPS = "_otps"


def _columns(conn: sqlite3.Connection, table: str) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in conn.execute(f"PRAGMA table_info(`{table}`)")]


def _expected_params_columns() -> list[tuple[Any, ...]]:
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.execute(PARAMS_SCHEMA)
        return _columns(scratch, PARAMS_TABLE)
    finally:
        scratch.close()


_PARAMS_COLUMNS = _expected_params_columns()


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return found is not None


def ensure_params_table(conn: sqlite3.Connection) -> None:
    """PocketBase's `_params`; one of the same columns with other definitions (an earlier
    version of this engine made it) is rebuilt, rows kept. Any other is left alone."""
    if not _has_table(conn, PARAMS_TABLE):
        conn.execute(PARAMS_SCHEMA)
        return
    columns = _columns(conn, PARAMS_TABLE)
    if columns == _PARAMS_COLUMNS or [c[1] for c in columns] != [c[1] for c in _PARAMS_COLUMNS]:
        return
    old = f"{PARAMS_TABLE}_pf_old"
    conn.execute(f"ALTER TABLE `{PARAMS_TABLE}` RENAME TO `{old}`")
    conn.execute(PARAMS_SCHEMA)
    conn.execute(
        f"INSERT INTO `{PARAMS_TABLE}` (id, value, created, updated) "
        f"SELECT id, value, created, updated FROM `{old}`"
    )
    conn.execute(f"DROP TABLE `{old}`")


def missing_system_schema(conn: sqlite3.Connection) -> list[str]:
    """See the module docstring."""
    if not _has_table(conn, "_collections"):
        return ["table _collections"]
    missing: list[str] = []
    index = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'idx__collections_type'"
    ).fetchone()
    if index is None:
        missing.append("index idx__collections_type")
    for expected in SYSTEM_COLLECTIONS:
        name = str(expected["name"])
        if not expected.get("system"):
            continue  # `users` may be gone: PocketBase lets it be deleted
        row = conn.execute(
            "SELECT id, system, fields FROM _collections WHERE name = ?", (name,)
        ).fetchone()
        if row is None or row[0] != expected["id"] or not row[1]:
            missing.append(f"system collection {name} ({expected['id']})")
            continue
        if not _has_table(conn, name):
            missing.append(f"table {name}")
            continue
        if name == _OTPS:
            fields = orjson.loads(row[2] or "[]")
            columns = {str(c[1]) for c in _columns(conn, name)}
            if "sentTo" not in columns or not any(f.get("name") == "sentTo" for f in fields):
                missing.append("field _otps.sentTo")
    return missing


def adopt(conn: sqlite3.Connection) -> list[str]:
    """See the module docstring."""
    conn.execute(MIGRATIONS_SCHEMA)
    files = {str(row[0]) for row in conn.execute(f"SELECT file FROM `{MIGRATIONS_TABLE}`")}
    if any(file.endswith(_POCKETBASE_EXTENSION) for file in files):
        conn.execute(PARAMS_SCHEMA)  # PocketBase's folder: it made its tables, none is rebuilt
        return []
    ensure_params_table(conn)
    missing = missing_system_schema(conn)
    if missing:
        log.warning(
            "data.db lacks what PocketBase's system migrations make (%s): PocketBase will "
            "not open this data folder",
            ", ".join(missing),
        )
        return []
    start = time.time_ns() // 1000
    for offset, file in enumerate(SYSTEM_MIGRATIONS):
        conn.execute(
            f"INSERT INTO `{MIGRATIONS_TABLE}` (file, applied) VALUES (?, ?)",
            (file, start + offset),
        )
    return list(SYSTEM_MIGRATIONS)
