"""Files of view collections: which record of which collection holds a view record's file.

A view collection has no files of its own: a file field of a view is a column of a source
collection (or of another view), and its files are stored under the source record's prefix.

Contract (PocketBase's `FindRecordByViewFile` and its view query parsing, `parseQueryToFields`):

- `view_query_sources(schema, query)` maps each output column of a view query to
  `(collection, field name)` when the column is a plain field of a collection named in the
  query's FROM or JOIN clauses (`alias.field` or `field` of the first table, matched as
  PocketBase does: table names exactly, field names case-insensitively, `id` columns are no
  field); other columns are left out.
- `find_file_source(conn, schema, view, field_name, filename)` follows `field_name` through
  views of views (at most 5 levels, as PocketBase) to a base or auth collection, and answers
  `(that collection, the id of its first record whose field holds filename)`, or None.
- `await file_owner(app, coll, record_id, filename)` is for the download: `(coll, record_id)`
  for a collection that is not a view; for a view, the source of the first file field of the
  view record that holds `filename`, or a 404 `ApiError` when there is none.
"""

from __future__ import annotations

import re
import sqlite3
from typing import TYPE_CHECKING

from instance_runtime.core import fields as fv
from instance_runtime.core.errors import ApiError
from instance_runtime.core.models import Collection
from instance_runtime.core.records import find
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.tokenizer import UnbalancedError, tokenize

if TYPE_CHECKING:
    from instance_runtime.core.app import App

MAX_LEVELS = 5
_NOT_FOUND = "The requested resource wasn't found."

_JOIN = re.compile(
    r"\s+(full\s+outer\s+join|left\s+outer\s+join|right\s+outer\s+join|full\s+join|"
    r"cross\s+join|inner\s+join|outer\s+join|left\s+join|right\s+join|join)\s+?",
    re.I | re.M,
)
_DISCARD = re.compile(r"\s+(where|group\s+by|having|order|limit|with)\s+?", re.I | re.M)
_COMMENTS = re.compile(r"(/\*[\s\S]*?\*/)|(--.+$)", re.M)
_JOIN_MARK, _DISCARD_MARK = "__pf_join__", "__pf_discard__"


def _trim(raw: str, extra: str = "") -> str:
    chars = '`"[];' + extra
    return ".".join(part.strip(chars) for part in raw.split("."))


def _identifiers(raw: str) -> list[tuple[str, str]]:
    """`(original, alias)` of each comma-separated item (`x`, `x alias`, `x AS alias`)."""
    out: list[tuple[str, str]] = []
    for item in tokenize(raw, ","):
        parts = tokenize(item, " \n\t")
        if len(parts) == 3 and parts[1].lower() == "as":
            original, alias = parts[0], parts[2]
        elif len(parts) == 2:
            original, alias = parts
        elif len(parts) == 1:
            original, alias = parts[0], parts[0].split(".")[-1]
        else:
            continue  # an expression PocketBase refuses to parse: no source
        out.append((_trim(original), _trim(alias, "'")))
    return out


def _parse(query: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The (original, alias) columns and tables of a view query."""
    text = query.strip().strip(";")
    text = _COMMENTS.sub(" ", text)
    text = _JOIN.sub(f" {_JOIN_MARK} ", text)
    text = _DISCARD.sub(f" {_DISCARD_MARK} ", text)
    parts: dict[str, list[str]] = {"select": [], "from": [], "join": []}
    active: list[str] | None = None
    kind = ""
    skip = False
    for token in tokenize(text, ", \n\t", keep_separator=True):
        word = token.strip().lower()
        if word == "select":
            skip, kind, active = False, "select", parts["select"]
        elif word == "distinct":
            continue
        elif word == "from":
            skip, kind, active = False, "from", parts["from"]
        elif word == _JOIN_MARK:
            skip = False
            if kind == "join":
                parts["join"].append(",")
            kind, active = "join", parts["join"]
        elif word == _DISCARD_MARK:
            skip = True
        else:
            if kind == "join" and word == "on":
                skip = True
            if not skip and active is not None:
                active.append(" " + token)
    columns = _identifiers("".join(parts["select"]))
    tables = _identifiers("".join(parts["from"])) + _identifiers("".join(parts["join"]))
    return columns, tables


def view_query_sources(schema: Schema, query: str) -> dict[str, tuple[Collection, str]]:
    """See the module docstring."""
    try:
        columns, tables = _parse(query)
    except UnbalancedError:
        return {}  # not a query a view collection can hold
    by_name = {c.name: c for c in schema.all()}
    collections: dict[str, Collection] = {}
    for original, alias in tables:
        if "(" not in alias and original in by_name:
            collections[alias] = by_name[original]
    main = tables[0][1] if tables else ""
    out: dict[str, tuple[Collection, str]] = {}
    for original, alias in columns:
        pieces = original.split(".")
        table, name = (pieces[0], pieces[1]) if len(pieces) == 2 else (main, pieces[0])
        coll = collections.get(table)
        if coll is None or name.lower() == "id":
            continue
        field = next((f for f in coll.fields if f.name.lower() == name.lower()), None)
        if field is not None:
            out[alias] = (coll, field.name)
    return out


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
