"""View collections: the fields of a view query, and the checks PocketBase runs on it.

Contract (PocketBase 0.40's `core/view.go`; the SQL side is `core.view_query`):

- `query_fields(schema, query)` (`parseQueryToFields`) maps each parsed column alias to a
  `QueryField`: `id` is the view's text primary key; `count(...)` a number with `onlyInt`,
  `total(...)` a number; `cast(... as T)` a number (`real`, `decimal`, `numeric`), an
  `onlyInt` number (`int`, `integer`), a text (`text`) or a bool (`bool`, `boolean`); a
  column `t.f` (or `f` of the first table) of a collection named in FROM/JOIN (exactly) is a
  copy of its field `f` (matched case-insensitively) with everything kept (`system`,
  `hidden`, `required`, options...) but the name (the alias) and the id (`_clone_XXXX`,
  random) - except `id` columns, which become a single relation to that collection; anything
  else is json (`maxSize` 1). A `*` column or a query the parser refuses raises
  `ViewQueryError` (PocketBase's text).
- `create_view_fields(conn, schema, query)` (`CreateViewFields`): one field per column of the
  query as SQLite names them (`PRAGMA table_info` of `SELECT * FROM (query)`), in order, from
  `query_fields` or json; raises `ViewQueryError` for the parser, for SQLite (worded by
  `sqlite_error_text`) and for a missing `id` column (`MissingIdError`, with the fields).
- `dry_run(conn, schema, query, sample_size)` (`DryRunView`): the temporary view collection
  `temp_view_XXXXX` with those fields and up to `sample_size` of its records; raises
  `ViewQueryError` for several statements, a field name PocketBase refuses
  (`invalid field "x" (1): name: ...`), a failing sample query, and empty or repeated ids.
- `infer_view(conn, schema, coll)` is the collection validator's part: `coll.fields` become
  the query's fields (none when they cannot be made, the fields without `id` when it lacks
  one) and the `viewQuery` error is the dry run's (`Invalid query - ...`), or None.
- `sqlite_error_text(exc)` words an SQLite error as PocketBase's driver does.

Everything runs inside the caller's transaction and leaves no view behind.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from instance_runtime.core.errors import FieldError
from instance_runtime.core.field_names import field_name_error, go_error_text
from instance_runtime.core.models import Collection, Field
from instance_runtime.core.records import Record, row_to_record
from instance_runtime.core.schema import Schema
from instance_runtime.core.view_query import (
    Identifier,
    ViewQueryError,
    go_quoted,
    normalize_view_query_id,
    normalize_view_select_query,
    parse_identifiers,
    query_table_info,
)
from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.security import random_string

__all__ = [
    "MissingIdError",
    "QueryField",
    "ViewQueryError",
    "create_view_fields",
    "dry_run",
    "infer_view",
    "query_fields",
    "sqlite_error_text",
]

WILDCARD_ERROR = (
    "wildcard columns (*) are not supported - manually type the collection field names you "
    "want the view query to have"
)
MISSING_ID_ERROR = (
    "missing required id column (you can use `(ROW_NUMBER() OVER()) as id` if you don't have one)"
)
_CAST = re.compile(r"^cast\s*\(.*\s+as\s+(\w+)\s*\)\Z", re.I | re.S)
_CAST_FIELDS: dict[str, tuple[str, dict[str, Any]]] = {
    "real": ("number", {}),
    "decimal": ("number", {}),
    "numeric": ("number", {}),
    "int": ("number", {"onlyInt": True}),
    "integer": ("number", {"onlyInt": True}),
    "text": ("text", {}),
    "boolean": ("bool", {}),
    "bool": ("bool", {}),
}


class MissingIdError(ViewQueryError):
    """The query has no `id` column; `fields` are the fields of its other columns."""

    def __init__(self, fields: list[Field]) -> None:
        super().__init__(MISSING_ID_ERROR)
        self.fields = fields


@dataclass
class QueryField:
    """A view column's field; `collection` and `original` (a field name) when it comes from
    a collection (`original` only for copied fields, not for `id` relations)."""

    field: Field
    collection: Collection | None = None
    original: str | None = None


def sqlite_error_text(exc: sqlite3.Error) -> str:
    """An SQLite error as PocketBase's driver words it: `SQL logic error: MSG (1)`."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return str(exc)
    prefix = {1: "SQL logic error", 19: "constraint failed"}.get(code & 0xFF)
    name = prefix or str(getattr(exc, "sqlite_errorname", "error"))
    return f"{name}: {exc} ({code})"


def view_id_field() -> Field:
    """The `id` field of a view collection (PocketBase's `defaultViewIdField`)."""
    options = {"primaryKey": True, "pattern": "^[a-z0-9]+$"}
    return Field(name="id", type="text", system=True, required=True, options=options)


def default_view_field(name: str) -> Field:
    """The field of a column nothing better is known about: json (or the view's `id`)."""
    if name == "id":
        return view_id_field()
    return Field(name=name, type="json", options={"maxSize": 1})


def _collections_by_alias(schema: Schema, tables: list[Identifier]) -> dict[str, Collection]:
    names = {t.original for t in tables if "(" not in t.alias}  # subqueries are no tables
    found = [c for c in schema.all() if c.name in names]
    out: dict[str, Collection] = {}
    for table in tables:
        for coll in found:
            if coll.name == table.original:
                out[table.alias] = coll
    return out


def query_fields(schema: Schema, query: str) -> dict[str, QueryField]:
    """See the module docstring."""
    parsed = parse_identifiers(query)
    collections = _collections_by_alias(schema, parsed.tables)
    main = parsed.tables[0].alias if parsed.tables else ""
    out: dict[str, QueryField] = {}
    for col in parsed.columns:
        alias, lower = col.alias, col.original.lower()
        if alias == "*":
            raise ViewQueryError(WILDCARD_ERROR)
        if alias == "id":
            out[alias] = QueryField(view_id_field())
            continue
        if lower.startswith(("count(", "total(")):
            only_int = lower.startswith("count(")
            out[alias] = QueryField(Field(name=alias, type="number", options={"onlyInt": only_int}))
            continue
        cast = _CAST.match(lower)
        if cast is not None and cast.group(1) in _CAST_FIELDS:
            ftype, options = _CAST_FIELDS[cast.group(1)]
            out[alias] = QueryField(Field(name=alias, type=ftype, options=dict(options)))
            continue
        parts = col.original.split(".")
        name, table = (parts[1], parts[0]) if len(parts) == 2 else (parts[0], main)
        coll = collections.get(table)
        if coll is None:
            out[alias] = QueryField(default_view_field(alias))
            continue
        source = next((f for f in coll.fields if f.name.lower() == name.lower()), None)
        if source is None:
            out[alias] = QueryField(default_view_field(alias), coll)
        elif name.lower() == "id":  # a reference to a record of that collection
            options = {"maxSelect": 1, "collectionId": coll.id}
            out[alias] = QueryField(Field(name=alias, type="relation", options=options), coll)
        else:
            clone = Field.from_json(source.to_json())
            clone.id, clone.name = "_clone_" + random_string(4), alias
            out[alias] = QueryField(clone, coll, source.name)
    return out


def create_view_fields(conn: sqlite3.Connection, schema: Schema, query: str) -> list[Field]:
    """See the module docstring."""
    suggested = query_fields(schema, query)
    try:
        info = query_table_info(conn, query)
    except sqlite3.Error as exc:
        raise ViewQueryError(sqlite_error_text(exc)) from exc
    names = [str(row["name"]) for row in info]
    fields = [suggested[n].field if n in suggested else default_view_field(n) for n in names]
    if "id" not in names:
        raise MissingIdError(fields)
    return fields


def _check_field_names(fields: list[Field]) -> None:
    for i, f in enumerate(fields):
        problem = field_name_error(f.name)
        if problem is not None:
            text = go_error_text(problem)
            raise ViewQueryError(f"invalid field {go_quoted(f.name)} ({i}): name: {text}.")


def dry_run(
    conn: sqlite3.Connection, schema: Schema, query: str, sample_size: int = 10
) -> tuple[Collection, list[Record]]:
    """See the module docstring."""
    query = normalize_view_select_query(query)
    fields = create_view_fields(conn, schema, query)
    temp = Collection(name="temp_view_" + random_string(5), type="view")
    temp.options["viewQuery"] = query
    temp.fields = fields
    _check_field_names(fields)
    try:
        query = normalize_view_query_id(conn, query)
    except sqlite3.Error as exc:
        text = sqlite_error_text(exc)
        raise ViewQueryError("failed to normalize view query id: " + text) from exc
    table = quote(temp.name)
    sql = f"SELECT {table}.* FROM (SELECT * FROM ({query})) as {table} LIMIT {int(sample_size)}"
    try:
        cursor = conn.execute(sql)
        names = [d[0] for d in cursor.description or ()]
        rows = cursor.fetchall()
    except sqlite3.Error as exc:
        raise ViewQueryError("failed to retrieve query records: " + sqlite_error_text(exc)) from exc
    records = [row_to_record(temp, names, row) for row in rows]
    seen: set[str] = set()
    for record in records:
        record_id = str(record.get("id") or "")
        if not record_id:
            raise ViewQueryError("the query could return records with empty or invalid ids")
        if record_id in seen:
            raise ViewQueryError("the query could return records with non-unique ids")
        seen.add(record_id)
    return temp, records


def infer_view(conn: sqlite3.Connection, schema: Schema, coll: Collection) -> FieldError | None:
    """See the module docstring."""
    query = coll.view_query
    if query == "":
        coll.fields = []
        return FieldError("validation_required", "Cannot be blank.")
    try:
        coll.fields = create_view_fields(conn, schema, query)
    except MissingIdError as exc:
        coll.fields = exc.fields
    except ViewQueryError:
        coll.fields = []
    try:
        dry_run(conn, schema, query)
    except ViewQueryError as exc:
        return FieldError("validation_invalid_view_query", "Invalid query - " + str(exc)[:500])
    return None
