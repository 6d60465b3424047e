"""Files of view collections: which record of which collection holds a view record's file.

A view collection has no files of its own: a file field of a view is a column of a source
collection (or of another view), and its files are stored under the source record's prefix.

Contract (PocketBase's `FindRecordByViewFile` and its view query parsing, `parseQueryToFields`):

- `view_query_sources(schema, query)` maps each output column of a view query to
  `(collection, field name)` when its field is a copy of a collection's field
  (`core.views.query_fields`: `alias.field` or `field` of the first table of the FROM or JOIN
  clauses, table names matched exactly, field names case-insensitively; `id` columns,
  aggregates and casts are no copies); other columns are left out, and all of them when
  PocketBase's parser refuses the query.
- `find_file_source(conn, schema, view, field_name, filename)` follows `field_name` through
  views of views (at most 5 levels, as PocketBase) to a base or auth collection, and answers
  `(that collection, the id of its first record whose field holds filename)`, or None.
- `await file_owner(app, coll, record_id, filename)` is for the download: `(coll, record_id)`
  for a collection that is not a view; for a view, the source of the first file field of the
  view record that holds `filename`, or a 404 `ApiError` when there is none.
"""

from __future__ import annotations

import sqlite3
from typing import TYPE_CHECKING

from instance_runtime.core import fields as fv
from instance_runtime.core.errors import ApiError
from instance_runtime.core.models import Collection
from instance_runtime.core.records import find
from instance_runtime.core.schema import Schema
from instance_runtime.core.views import ViewQueryError, query_fields
from instance_runtime.tools.dbutils import quote

if TYPE_CHECKING:
    from instance_runtime.core.app import App

MAX_LEVELS = 5
_NOT_FOUND = "The requested resource wasn't found."


def view_query_sources(schema: Schema, query: str) -> dict[str, tuple[Collection, str]]:
    """See the module docstring."""
    try:
        fields = query_fields(schema, query)
    except ViewQueryError:
        return {}  # not a query a view collection can hold
    return {
        alias: (qf.collection, qf.original)
        for alias, qf in fields.items()
        if qf.collection is not None and qf.original is not None
    }


def find_file_source(
    conn: sqlite3.Connection, schema: Schema, view: Collection, field_name: str, filename: str
) -> tuple[Collection, str] | None:
    """See the module docstring."""
    current, name = view, field_name
    for _level in range(MAX_LEVELS):
        if not current.is_view:
            break
        source = view_query_sources(schema, current.view_query).get(name)
        if source is None:
            return None
        current, name = source
    if current.is_view:
        return None  # deeper than PocketBase follows
    field = current.field(name)
    if field is None or field.type != "file":
        return None
    table, column = quote(current.name), quote(field.name)
    if field.is_multiple:
        sql = (
            f"SELECT {table}.id FROM {table} JOIN json_each(CASE WHEN json_valid({table}.{column}) "
            f"THEN {table}.{column} ELSE json_array({table}.{column}) END) je "
            "WHERE je.value = ? LIMIT 1"
        )
    else:
        sql = f"SELECT id FROM {table} WHERE {column} = ? LIMIT 1"
    row = conn.execute(sql, (filename,)).fetchone()
    return (current, str(row[0])) if row is not None else None


async def file_owner(
    app: App, coll: Collection, record_id: str, filename: str
) -> tuple[Collection, str]:
    """See the module docstring."""
    if not coll.is_view:
        return coll, record_id

    def owner(conn: sqlite3.Connection, schema: Schema) -> tuple[Collection, str] | None:
        record = find(conn, coll, record_id)
        if record is None:
            return None
        for f in coll.fields:
            if f.type == "file" and filename in fv.to_str_list(record.get(f.name)):
                return find_file_source(conn, schema, coll, f.name, filename)
        return None

    found = await app.read(owner)
    if found is None:
        raise ApiError(404, _NOT_FOUND)
    return found
