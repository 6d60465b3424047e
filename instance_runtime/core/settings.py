"""Application settings (PocketBase's `_params` row `settings`), held in memory.

Contract:

- `Settings(values)` holds the current settings (a plain dict shaped as PocketBase's, secrets
  included); `current` is that dict and must be treated as read-only: every change replaces it
  whole (`replace`), so a reader holding the old one keeps a consistent snapshot.
- `load(conn)` reads the stored settings merged over `default_settings.json` (captured from
  PocketBase 0.40.6) and the secret members (`smtp.password`, `s3.secret`,
  `backups.s3.secret`, empty by default).
- `patched(current, patch)` is what PocketBase's JSON decoding into its settings struct gives:
  objects merge member by member, lists and scalars are replaced, unknown members are ignored,
  `null` leaves a member as it is, and a value of the wrong type raises `SettingsTypeError`
  naming it (the API answers 400).
- `public(values)` is what `GET /api/settings` shows: the secrets are left out (PocketBase omits
  an empty `smtp.password` and blanks the others: both read as "not shown").
- `store(conn, values)` writes them in the caller's transaction.
"""

from __future__ import annotations

import copy
import sqlite3
from pathlib import Path
from typing import Any

import orjson

from instance_runtime.core.models import now_datetime

Values = dict[str, Any]

SECRETS: tuple[tuple[str, ...], ...] = (
    ("smtp", "password"),
    ("s3", "secret"),
    ("backups", "s3", "secret"),
)


def _with_secrets(values: Values) -> Values:
    out = copy.deepcopy(values)
    for path in SECRETS:
        node = out
        for key in path[:-1]:
            node = node[key]
        node.setdefault(path[-1], "")
    return out


DEFAULTS: Values = _with_secrets(
    orjson.loads((Path(__file__).with_name("default_settings.json")).read_bytes())
)
# The zero value of an item of each list of objects (Go's struct zero values).
_LIST_ITEMS: dict[tuple[str, ...], Values] = {
    ("rateLimits", "rules"): {"label": "", "audience": "", "duration": 0, "maxRequests": 0},
}

_TABLE = (
    "CREATE TABLE IF NOT EXISTS `_params` (`id` TEXT PRIMARY KEY NOT NULL, `value` JSON DEFAULT "
    "NULL, `created` TEXT DEFAULT '' NOT NULL, `updated` TEXT DEFAULT '' NOT NULL)"
)


class SettingsTypeError(ValueError):
    """A patch member whose JSON type is not the setting's (`path` is dotted)."""

    def __init__(self, path: str, expected: str) -> None:
        super().__init__(f"{path}: expected {expected}")
        self.path = path


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


def _decode(template: Any, value: Any, path: tuple[str, ...]) -> Any:
    dotted = ".".join(path)
    expected = _kind(template)
    if isinstance(template, dict):
        if not isinstance(value, dict):
            raise SettingsTypeError(dotted, "object")
        out = dict(template)
        for key, item in value.items():
            if key in template and item is not None:
                out[key] = _decode(template[key], item, (*path, key))
        return out
    if isinstance(template, list):
        if not isinstance(value, list):
            raise SettingsTypeError(dotted, "list")
        item_template = _LIST_ITEMS.get(path, "")
        return [_decode(item_template, item, (*path, str(i))) for i, item in enumerate(value)]
    if expected == "int":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise SettingsTypeError(dotted, "an integer")
        if isinstance(value, float) and not value.is_integer():
            raise SettingsTypeError(dotted, "an integer")
        return int(value)
    if _kind(value) != expected:
        raise SettingsTypeError(dotted, expected)
    return value


def patched(current: Values, patch: Values) -> Values:
    """See the module docstring."""
    merged: Values = _decode(current, patch, ())
    return merged


def public(values: Values) -> Values:
    """See the module docstring."""
    out = copy.deepcopy(values)
    for path in SECRETS:
        node = out
        for key in path[:-1]:
            node = node[key]
        node.pop(path[-1], None)
    return out


def load(conn: sqlite3.Connection) -> Values:
    """See the module docstring."""
    try:
        row = conn.execute("SELECT value FROM _params WHERE id = 'settings'").fetchone()
    except sqlite3.OperationalError:
        row = None
    stored = orjson.loads(row[0]) if row and row[0] else {}
    if not isinstance(stored, dict):
        return copy.deepcopy(DEFAULTS)
    try:
        return patched(DEFAULTS, stored)
    except SettingsTypeError:
        return copy.deepcopy(DEFAULTS)


def store(conn: sqlite3.Connection, values: Values) -> None:
    """See the module docstring."""
    conn.execute(_TABLE)
    now = now_datetime()
    conn.execute(
        "INSERT INTO _params (id, value, created, updated) VALUES ('settings', ?, ?, ?) "
        "ON CONFLICT(id) DO UPDATE SET value = excluded.value, updated = excluded.updated",
        (orjson.dumps(values).decode(), now, now),
    )


class Settings:
    """See the module docstring."""

    def __init__(self, values: Values) -> None:
        self._values = values

    @property
    def current(self) -> Values:
        return self._values

    def replace(self, values: Values) -> None:
        self._values = values
