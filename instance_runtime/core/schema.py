"""Collections in memory, and the DDL that keeps each collection's table in sync with it.

Contract:

- `Schema` is an immutable snapshot of every collection (a `CollectionLookup`): `find` takes an
  id or a name (names case-insensitively, as PocketBase). The runtime holds the current one and
  swaps it after each committed collection change (`Schema.load(conn)`).
- `bootstrap(conn)` creates `_collections` and PocketBase's system collections (and `users`) in
  an empty database; it does nothing on an existing one.
- `sync_table(conn, new, old)` creates, renames or alters the table of a base/auth collection so
  that it matches `new` (columns added, renamed by field id, dropped; single <-> multiple value
  conversion; indexes rebuilt) without losing rows; `sync_view` (re)creates a view collection's
  SQL view (`core.view_query.save_view`). Both run inside the caller's write transaction: a
  failure rolls everything back.
"""

from __future__ import annotations

import secrets
import sqlite3
import string
from collections.abc import Callable
from typing import Any

from instance_runtime.core.models import (
    COLLECTIONS_COLUMNS,
    COLLECTIONS_SCHEMA,
    COLLECTIONS_TABLE,
    Collection,
    Field,
    now_datetime,
)
from instance_runtime.core.system_collections import SYSTEM_COLLECTIONS
from instance_runtime.core.view_query import save_view
from instance_runtime.tools.dbutils import parse_index, quote

_ALNUM = string.ascii_lowercase + string.digits
_ALNUM_MIXED = string.ascii_letters + string.digits
_TOKEN_OPTIONS = (
    "authToken",
    "passwordResetToken",
    "emailChangeToken",
    "verificationToken",
    "fileToken",
)


class Schema:
    """An immutable snapshot of the collections, by id and by lower-case name."""

    def __init__(self, collections: list[Collection]) -> None:
        self._list = list(collections)
        self._by_id = {c.id: c for c in collections}
        self._by_name = {c.name.lower(): c for c in collections}

    @classmethod
    def load(cls, conn: sqlite3.Connection) -> Schema:
        cols = ", ".join(quote(c) for c in COLLECTIONS_COLUMNS)
        cur = conn.execute(f"SELECT {cols} FROM {COLLECTIONS_TABLE} ORDER BY rowid")
        names = [d[0] for d in cur.description]
        return cls([Collection.from_row(dict(zip(names, row, strict=True))) for row in cur])

    def find(self, name_or_id: str) -> Collection | None:
        return self._by_id.get(name_or_id) or self._by_name.get(name_or_id.lower())

    def all(self) -> list[Collection]:
        return list(self._list)

    def referencing(self, collection_id: str) -> list[tuple[Collection, Field]]:
        """Every (collection, relation field) whose relation targets `collection_id`."""
        out = []
        for coll in self._list:
            for f in coll.fields:
                if f.type == "relation" and f.collection_id == collection_id:
                    out.append((coll, f))
        return out


# ---------------------------------------------------------------------------- bootstrap
def bootstrap(conn: sqlite3.Connection) -> bool:
    """Create the system tables and collections if missing; True if the database was new."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (COLLECTIONS_TABLE,)
    ).fetchone()
    if exists:
        return False
    for stmt in COLLECTIONS_SCHEMA.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    now = now_datetime()
    for raw in SYSTEM_COLLECTIONS:
        coll = Collection.from_json(raw)
        coll.created = coll.updated = now
        if coll.is_auth:
            for key in _TOKEN_OPTIONS:
                option = dict(coll.options.get(key) or {})
                option["secret"] = "".join(secrets.choice(_ALNUM_MIXED) for _ in range(50))
                coll.options[key] = option
        insert_collection_row(conn, coll)
        sync_table(conn, coll, None)
    return True


def insert_collection_row(conn: sqlite3.Connection, coll: Collection) -> None:
    row = coll.to_row()
    cols = ", ".join(quote(c) for c in row)
    marks = ", ".join("?" for _ in row)
    conn.execute(f"INSERT INTO {COLLECTIONS_TABLE} ({cols}) VALUES ({marks})", list(row.values()))


def update_collection_row(conn: sqlite3.Connection, coll: Collection) -> None:
    row = coll.to_row()
    sets = ", ".join(f"{quote(c)} = ?" for c in row if c != "id")
    values = [v for c, v in row.items() if c != "id"] + [coll.id]
    conn.execute(f"UPDATE {COLLECTIONS_TABLE} SET {sets} WHERE id = ?", values)


def delete_collection_row(conn: sqlite3.Connection, coll: Collection) -> None:
    conn.execute(f"DELETE FROM {COLLECTIONS_TABLE} WHERE id = ?", (coll.id,))


def has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type IN ('table','view') AND LOWER(name)=LOWER(?)",
        (name,),
    ).fetchone()
    return row is not None


# ---------------------------------------------------------------------------- tables
def _rand(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


IndexErrorHook = Callable[[int, str, sqlite3.Error], None]


def _create_indexes(
    conn: sqlite3.Connection, coll: Collection, on_error: IndexErrorHook | None = None
) -> None:
    for position, raw in enumerate(coll.indexes):
        idx = parse_index(raw)
        idx.table_name = coll.name
        if not idx.is_valid():
            continue
        try:
            conn.execute(idx.build())
        except sqlite3.Error as exc:
            if on_error is None:
                raise
            on_error(position, idx.index_name, exc)


def _drop_indexes(conn: sqlite3.Connection, coll: Collection) -> None:
    for raw in coll.indexes:
        idx = parse_index(raw)
        if idx.index_name:
            conn.execute(f"DROP INDEX IF EXISTS {quote(idx.index_name)}")


def _views(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    return [
        (str(r[0]), str(r[1]))
        for r in conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type='view' AND sql IS NOT NULL"
        )
    ]


def create_table(
    conn: sqlite3.Connection, coll: Collection, on_index_error: IndexErrorHook | None = None
) -> None:
    cols = ", ".join(
        f"{quote(f.name)} {f.column_definition()}"
        for f in sorted(coll.fields, key=lambda f: f.name)
    )
    conn.execute(f"CREATE TABLE {quote(coll.name)} ({cols})")
    _create_indexes(conn, coll, on_index_error)


def sync_table(
    conn: sqlite3.Connection,
    new: Collection,
    old: Collection | None,
    on_index_error: IndexErrorHook | None = None,
) -> None:
    """See the module docstring. Views are handled by `sync_view`; a failing index calls
    `on_index_error(position, name, error)` (which may raise) instead of raising."""
    if new.is_view:
        sync_view(conn, new, old)
        return
    if old is None or not has_table(conn, old.name):
        create_table(conn, new, on_index_error)
        return
    table = new.name
    views = _views(conn)
    # Views are dropped while columns move and restored afterwards (as PocketBase does).
    for name, _sql in views:
        conn.execute(f"DROP VIEW IF EXISTS {quote(name)}")
    _drop_indexes(conn, old)
    if old.name != new.name:
        conn.execute(f"ALTER TABLE {quote(old.name)} RENAME TO {quote(new.name)}")
    for gone in old.fields:
        if new.field_by_id(gone.id) is None:
            conn.execute(f"ALTER TABLE {quote(table)} DROP COLUMN {quote(gone.name)}")
    to_rename: dict[str, str] = {}
    for f in new.fields:
        old_field = old.field_by_id(f.id)
        if old_field is None:
            temp = f.name + _rand(5)
            to_rename[temp] = f.name
            conn.execute(
                f"ALTER TABLE {quote(table)} ADD COLUMN {quote(temp)} {f.column_definition()}"
            )
        elif old_field.name != f.name:
            temp = f.name + _rand(5)
            to_rename[temp] = f.name
            conn.execute(
                f"ALTER TABLE {quote(table)} RENAME COLUMN {quote(old_field.name)} TO {quote(temp)}"
            )
    for temp, actual in to_rename.items():
        conn.execute(f"ALTER TABLE {quote(table)} RENAME COLUMN {quote(temp)} TO {quote(actual)}")
    for f in new.fields:
        previous = old.field_by_id(f.id)
        if previous is not None and previous.is_multiple != f.is_multiple:
            _convert_multiple(conn, table, f, to_multiple=f.is_multiple)
    _create_indexes(conn, new, on_index_error)
    for name, sql in views:
        if not has_table(conn, name):
            conn.execute(sql)


def _convert_multiple(conn: sqlite3.Connection, table: str, f: Field, *, to_multiple: bool) -> None:
    temp = "_" + f.name + _rand(5)
    q_col, q_tmp, q_tbl = quote(f.name), quote(temp), quote(table)
    conn.execute(f"ALTER TABLE {q_tbl} RENAME COLUMN {q_col} TO {q_tmp}")
    conn.execute(f"ALTER TABLE {q_tbl} ADD COLUMN {q_col} {f.column_definition()}")
    if to_multiple:
        conn.execute(
            f"UPDATE {q_tbl} SET {q_col} = (CASE WHEN COALESCE({q_tmp}, '') = '' THEN '[]' "
            f"ELSE (CASE WHEN json_valid({q_tmp}) AND json_type({q_tmp}) == 'array' THEN {q_tmp} "
            f"ELSE json_array({q_tmp}) END) END)"
        )
    else:
        conn.execute(
            f"UPDATE {q_tbl} SET {q_col} = (CASE WHEN COALESCE({q_tmp}, '[]') = '[]' THEN '' "
            f"ELSE (CASE WHEN json_valid({q_tmp}) AND json_type({q_tmp}) == 'array' "
            f"THEN COALESCE(json_extract({q_tmp}, '$[#-1]'), '') ELSE {q_tmp} END) END)"
        )
    conn.execute(f"ALTER TABLE {q_tbl} DROP COLUMN {q_tmp}")


def sync_view(conn: sqlite3.Connection, new: Collection, old: Collection | None) -> None:
    if old is not None:
        conn.execute(f"DROP VIEW IF EXISTS {quote(old.name)}")
    save_view(conn, new.name, new.view_query)  # as PocketBase stores it: SELECT * FROM (...)


def drop_table(conn: sqlite3.Connection, coll: Collection) -> None:
    kind = "VIEW" if coll.is_view else "TABLE"
    conn.execute(f"DROP {kind} IF EXISTS {quote(coll.name)}")


def truncate_table(conn: sqlite3.Connection, coll: Collection) -> None:
    conn.execute(f"DELETE FROM {quote(coll.name)}")


def table_columns(conn: sqlite3.Connection, name: str) -> list[dict[str, Any]]:
    """`PRAGMA table_info` rows of `name` as dicts (empty when there is no such table)."""
    cur = conn.execute(f"PRAGMA table_info({quote(name)})")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur]
