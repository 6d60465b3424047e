"""View collections: their fields inferred from the view query, as PocketBase does.

Contract: `infer_view(conn, schema, coll)` dry-runs `CREATE VIEW` inside a savepoint (rolled
back), sets `coll.fields` from the query's columns (a plain column of a collection keeps its
field's type and options, joined tables' too (`core.view_files.view_query_sources`),
aggregate expressions are numbers, anything else json) and returns
the `viewQuery` validation error, if any. `sqlite_error_text` words SQLite errors as
PocketBase's driver does.
"""

from __future__ import annotations

import copy
import re
import sqlite3

from instance_runtime.core.errors import FieldError
from instance_runtime.core.models import Collection, Field
from instance_runtime.core.schema import Schema
from instance_runtime.core.system_collections import SYSTEM_COLLECTIONS
from instance_runtime.core.view_files import view_query_sources
from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.security import random_string


def id_field() -> Field:
    """The `id` field of a new collection."""
    return Field.from_json(copy.deepcopy(SYSTEM_COLLECTIONS[-1]["fields"][0]))


def sqlite_error_text(exc: sqlite3.Error) -> str:
    """An SQLite error as PocketBase's driver words it: `SQL logic error: MSG (1)`."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None:
        return str(exc)
    prefix = {1: "SQL logic error", 19: "constraint failed"}.get(code & 0xFF)
    name = prefix or str(getattr(exc, "sqlite_errorname", "error"))
    return f"{name}: {exc} ({code})"


_NUMBER_EXPR = re.compile(r"^\s*(count|sum|total|avg|min|max|length)\s*\(", re.I)


def infer_view(conn: sqlite3.Connection, schema: Schema, coll: Collection) -> FieldError | None:
    """Set the fields of a view collection from its query; the viewQuery error, if any."""
    previous = {f.name: f for f in coll.fields}
    coll.fields = []
    if not coll.view_query.strip():
        return FieldError("validation_required", "Cannot be blank.")
    conn.execute("SAVEPOINT view_probe")
    try:
        conn.execute(f"CREATE VIEW {quote(coll.name + '_pf_probe')} AS {coll.view_query}")
        cur = conn.execute(f"SELECT * FROM {quote(coll.name + '_pf_probe')} LIMIT 0")
        names = [d[0] for d in cur.description]
    except sqlite3.Error as exc:
        return FieldError(
            "validation_invalid_view_query", "Invalid query - " + sqlite_error_text(exc)[:500]
        )
    finally:
        conn.execute("ROLLBACK TO view_probe")
        conn.execute("RELEASE view_probe")
    sources, exprs = _view_sources(schema, coll.view_query)
    for name in names:
        existing = previous.get(name)
        if name == "id":
            f = id_field()
            f.options.update({"autogeneratePattern": "", "max": 0, "min": 0})
        elif name in sources:
            f = Field.from_json(sources[name].to_json())
            f.name, f.system = name, False
            f.id = existing.id if existing and existing.type == f.type else "_clone_" + _rand4()
        elif _NUMBER_EXPR.match(exprs.get(name, "")):
            f = Field(name=name, type="number", id=existing.id if existing else "")
        else:
            f = Field(name=name, type="json", id=existing.id if existing else "")
            f.options["maxSize"] = 1
        coll.fields.append(f)
    if "id" not in names:
        return FieldError(
            "validation_invalid_view_query",
            "Invalid query - missing required id column (you can use `(ROW_NUMBER() OVER()) "
            "as id` if you don't have one).",
        )
    return None


def _rand4() -> str:
    return random_string(4)


def _view_sources(schema: Schema, query: str) -> tuple[dict[str, Field], dict[str, str]]:
    """Best-effort maps for `SELECT a, b AS c, count(x) AS n FROM coll`: output column ->
    source field, and output column -> expression."""
    match = re.search(r"select\s+(.*?)\s+from\s+[`\"\[]?(\w+)", query, re.I | re.S)
    if not match:
        return {}, {}
    source = schema.find(match.group(2))
    out: dict[str, Field] = {}
    exprs: dict[str, str] = {}
    items = _split_select(match.group(1))
    for item in items:
        alias = re.match(r"^(.*?)\s+as\s+[`\"\[]?(\w+)[`\"\]]?$", item, re.I | re.S)
        expr, name = (alias.group(1), alias.group(2)) if alias else (item, item.split(".")[-1])
        name = name.strip('`"[] ')
        exprs[name] = expr
        column = re.match(r"^(?:\w+\.)?[`\"\[]?(\w+)[`\"\]]?$", expr.strip())
        if source is not None and column:
            f = source.field(column.group(1))
            if f is not None:
                out[name] = f
    for col_name, (src, src_field) in view_query_sources(schema, query).items():  # joins too
        found = src.field(src_field)
        if found is not None:
            out[col_name] = found
    if source is not None and "*" in items:
        for f in source.fields:
            out.setdefault(f.name, f)
    return out, exprs


def _split_select(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current.strip())
    return parts
