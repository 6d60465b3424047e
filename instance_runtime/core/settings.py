"""Application settings (PocketBase's `_params` row `settings`), with PocketBase's defaults.

Contract: `load(conn)` returns the stored settings merged over `default_settings.json`
(captured from PocketBase 0.40.6; secrets are never part of it); `save(conn, patch)` deep-merges
`patch` into them, stores and returns the result. Runs in the caller's transaction.
"""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from instance_runtime.core.models import now_datetime

DEFAULTS: dict[str, Any] = orjson.loads(
    (Path(__file__).with_name("default_settings.json")).read_bytes()
)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS `_params` (`id` TEXT PRIMARY KEY NOT NULL, `value` JSON DEFAULT "
    "NULL, `created` TEXT DEFAULT '' NOT NULL, `updated` TEXT DEFAULT '' NOT NULL)"
)


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        elif key in out:
            out[key] = copy.deepcopy(value)
    return out


def load(conn: sqlite3.Connection) -> dict[str, Any]:
    try:
        row = conn.execute("SELECT value FROM _params WHERE id = 'settings'").fetchone()
    except sqlite3.OperationalError:
        row = None
    stored = orjson.loads(row[0]) if row and row[0] else {}
    return _merge(DEFAULTS, stored if isinstance(stored, dict) else {})


def save(conn: sqlite3.Connection, patch: dict[str, Any]) -> dict[str, Any]:
    conn.execute(_SCHEMA)
    merged = _merge(load(conn), patch)
    now = now_datetime()
    conn.execute(
        "INSERT INTO _params (id, value, created, updated) VALUES ('settings', ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET value = excluded.value, updated = excluded.updated",
        (orjson.dumps(merged).decode(), now, now),
    )
    return merged
