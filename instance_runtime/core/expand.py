"""Record enrichment for the API: `expand` (relations, back-relations) and the `fields` picker.

Contract:

- `expand_records(conn, schema, coll, records, expand, info)` returns, per record id, the
  `expand` object PocketBase adds: each path `a.b.c` (max 6 levels) follows relation fields,
  and `COLLECTION_via_FIELD` back-relations; a single relation expands to an object, a multiple
  one (and a back-relation) to a list. Related records are visible only if their collection's
  `viewRule` lets the requester see them (context `expand`); unknown paths are ignored.
- `pick_fields(data, fields)` applies the `fields` query parameter (`*`, `a,b`,
  `expand.rel.name`, `text:excerpt(max,withEllipsis)`) to serialized JSON.
"""

from __future__ import annotations

import html
import re
import sqlite3
from typing import Any

from instance_runtime.core.models import Collection, Field
from instance_runtime.core.records import (
    Record,
    check_rule,
    fetch_many,
    row_to_record,
    select_columns,
    serialize,
)
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import parse_index, quote

MAX_EXPAND_DEPTH = 6
_VIA = re.compile(r"^(\w+)_via_(\w+)$")


def _parse_expand(expand: str) -> dict[str, Any]:
    """`a.b,a.c,d` -> {"a": {"b": {}, "c": {}}, "d": {}} (depth-limited)."""
    tree: dict[str, Any] = {}
    for raw in expand.split(","):
        path = [p.strip() for p in raw.strip().split(".") if p.strip()][:MAX_EXPAND_DEPTH]
        node = tree
        for part in path:
            node = node.setdefault(part, {})
    return tree


def _visible(
    conn: sqlite3.Connection, schema: Schema, coll: Collection, rid: str, info: RequestInfo
) -> bool:
    if info.is_superuser:
        return True
    return check_rule(conn, schema, coll, coll.viewRule, rid, info)


def _is_unique_single(coll: Collection, f: Field) -> bool:
    if f.is_multiple:
        return False
    for raw in coll.indexes:
        idx = parse_index(raw)
        if idx.unique and len(idx.columns) == 1 and idx.columns[0].name.lower() == f.name.lower():
            return True
    return False


def expand_records(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    records: list[Record],
    expand: str,
    info: RequestInfo,
) -> dict[str, dict[str, Any]]:
    """See the module docstring. When `expand` names at least one valid path, every record
    gets an entry (`{}` when nothing was found), as PocketBase sets `expand` then."""
    if not expand.strip() or not records:
        return {}
    tree = _parse_expand(expand)
    result = _expand(conn, schema, coll, records, tree, info.with_context("expand"))
    if any(_valid_path(schema, coll, name) for name in tree):
        for record in records:
            result.setdefault(str(record["id"]), {})
    return result


def _valid_path(schema: Schema, coll: Collection, name: str) -> bool:
    f = coll.field(name)
    if f is not None:
        return f.type == "relation"
    match = _VIA.match(name)
    if not match:
        return False
    ref = schema.find(match.group(1))
    via = ref.field(match.group(2)) if ref is not None else None
    return via is not None and via.type == "relation" and via.collection_id == coll.id


def _expand(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    records: list[Record],
    tree: dict[str, Any],
    info: RequestInfo,
) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for name, subtree in tree.items():
        f = coll.field(name)
        if f is not None and f.type == "relation":
            _expand_relation(conn, schema, f, records, name, subtree, info, result)
            continue
        match = _VIA.match(name)
        if match:
            _expand_back(conn, schema, coll, records, name, match, subtree, info, result)
    return result


def _expand_relation(
    conn: sqlite3.Connection,
    schema: Schema,
    f: Field,
    records: list[Record],
    name: str,
    subtree: dict[str, Any],
    info: RequestInfo,
    result: dict[str, dict[str, Any]],
) -> None:
    target = schema.find(f.collection_id)
    if target is None:
        return
    ids: list[str] = []
    for record in records:
        value = record.get(name)
        for rid in value if isinstance(value, list) else ([value] if value else []):
            if rid not in ids:
                ids.append(rid)
    related = fetch_many(conn, target, ids)
    visible = {
        rid: rec for rid, rec in related.items() if _visible(conn, schema, target, rid, info)
    }
    serialized = _serialize_all(conn, schema, target, list(visible.values()), subtree, info)
    for record in records:
        value = record.get(name)
        if isinstance(value, list):
            items = [serialized[r] for r in value if r in serialized]
            if items:
                result.setdefault(str(record["id"]), {})[name] = items
        elif value and value in serialized:
            result.setdefault(str(record["id"]), {})[name] = serialized[value]


def _expand_back(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    records: list[Record],
    name: str,
    match: re.Match[str],
    subtree: dict[str, Any],
    info: RequestInfo,
    result: dict[str, dict[str, Any]],
) -> None:
    ref = schema.find(match.group(1))
    if ref is None:
        return
    f = ref.field(match.group(2))
    if f is None or f.type != "relation" or f.collection_id != coll.id:
        return
    if not info.is_superuser and ref.listRule is None:
        return
    single = _is_unique_single(ref, f)
    for record in records:
        rid = str(record["id"])
        table, col = quote(ref.name), quote(f.name)
        if f.is_multiple:
            where = f"EXISTS (SELECT 1 FROM json_each({table}.{col}) je WHERE je.value = ?)"
        else:
            where = f"{table}.{col} = ?"
        cur = conn.execute(
            f"SELECT {select_columns(ref)} FROM {table} WHERE {where} LIMIT 1000", (rid,)
        )
        names = [x.name for x in ref.fields]
        found = [row_to_record(ref, names, row) for row in cur]
        found = [r for r in found if _visible(conn, schema, ref, str(r["id"]), info)]
        if not found:
            continue
        serialized = _serialize_all(conn, schema, ref, found, subtree, info)
        items = [serialized[str(r["id"])] for r in found]
        result.setdefault(rid, {})[name] = items[0] if single else items


def _serialize_all(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    records: list[Record],
    subtree: dict[str, Any],
    info: RequestInfo,
) -> dict[str, dict[str, Any]]:
    nested = _expand(conn, schema, coll, records, subtree, info) if subtree else {}
    return {str(r["id"]): serialize(coll, r, info, nested.get(str(r["id"]))) for r in records}


# ---------------------------------------------------------------------------- fields picker
_EXCERPT = re.compile(r"^(.+?):excerpt\(\s*(\d+)\s*(?:,\s*(\w+)\s*)?\)$")
_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")


def _excerpt(value: Any, max_len: int, ellipsis: bool) -> Any:
    if not isinstance(value, str):
        return value
    text = _SPACES.sub(" ", html.unescape(_TAGS.sub(" ", value))).strip()
    if len(text) > max_len:
        text = text[:max_len].rstrip()
        if ellipsis:
            text += "..."
    return text


def _fields_tree(fields: str) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for raw in _split_fields(fields):
        item = raw.strip()
        if not item:
            continue
        modifier = None
        match = _EXCERPT.match(item)
        if match:
            item = match.group(1)
            modifier = (int(match.group(2)), (match.group(3) or "").lower() in ("true", "1", "t"))
        parts = item.split(".")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[parts[-1]] = {"__excerpt__": modifier} if modifier else node.get(parts[-1], {})
    return tree


def _split_fields(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return parts


def _pick(data: Any, tree: dict[str, Any]) -> Any:
    if isinstance(data, list):
        return [_pick(item, tree) for item in data]
    if not isinstance(data, dict):
        return data
    out: dict[str, Any] = {}
    if "*" in tree:
        star = tree["*"]
        for key, value in data.items():
            if key == "expand" and "expand" not in tree:
                continue
            out[key] = _apply(value, star)
    for key, sub in tree.items():
        if key == "*" or key not in data:
            continue
        out[key] = _apply(data[key], sub)
    return out


def _apply(value: Any, sub: dict[str, Any]) -> Any:
    if "__excerpt__" in sub:
        max_len, ellipsis = sub["__excerpt__"]
        return _excerpt(value, max_len, ellipsis)
    if sub:
        return _pick(value, sub)
    return value


def pick_fields(data: Any, fields: str) -> Any:
    """See the module docstring (`fields` "" returns `data` unchanged)."""
    if not fields.strip():
        return data
    return _pick(data, _fields_tree(fields))
