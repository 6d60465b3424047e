"""Record enrichment for the API: `expand` (relations, back-relations) and the `fields` picker.

Contract (PocketBase 0.40's `ExpandRecords` with the API's fetch function):

- `expand_records(conn, schema, coll, records, expand, info)` returns, per record id, the
  `expand` object PocketBase adds. The comma-separated paths are normalized (spaces removed,
  outer dots trimmed, a path that prefixes another dropped, duplicates dropped) and expanded
  one after the other over the whole batch, each path `a.b.c` following relation fields and
  `COLLECTION_via_FIELD` back-relations (the old `COLLECTION(FIELD)` too) up to 6 levels; a
  single relation (and a back-relation whose field has a single-column unique index) expands
  to an object, others to a list, in the order of the relation's ids.
- Related records are fetched as the caller may view them: superusers see everything, a
  collection whose `viewRule` is None makes the whole path fail, otherwise the rule (context
  `expand`) filters the records; an auth record the caller manages (`manageRule`) shows
  its email.
- A path that fails anywhere along its length (unknown or non-relation name, superuser-only
  collection, ...) leaves no trace on the batch. A path that gets as far as a level gives
  every record of that level an `expand` member (`{}` when none of its relations was found),
  nested levels included; a record that no path reached has no `expand` (absent from the
  result). Paths with a common prefix are merged.
- `pick_fields(data, fields)` applies the `fields` query parameter (`*`, `a,b`,
  `expand.rel.name`, `text:excerpt(max,withEllipsis)`) to serialized JSON, as PocketBase's
  picker: `*` keeps every key of its level that no other name mentions, `expand` included.
"""

from __future__ import annotations

import html
import re
import sqlite3
from dataclasses import dataclass, field
from typing import Any

import orjson

from instance_runtime.core.errors import bad_request
from instance_runtime.core.field_resolver import build_records_query
from instance_runtime.core.models import Collection
from instance_runtime.core.records import (
    Record,
    managed_ids,
    row_to_record,
    select_columns,
    serialize,
)
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import parse_index, quote
from instance_runtime.tools.search import Expr, FilterError, quote_column
from instance_runtime.tools.tokenizer import UnbalancedError, tokenize

MAX_EXPAND_DEPTH = 6
MAX_BACK_RELATIONS = 1000  # PocketBase's arbitrary limit per record and back-relation
_VIA = re.compile(r"^(\w+)_via_(\w+)$", re.ASCII)
_VIA_OLD = re.compile(r"^(\w+)\((\w+)\)$", re.ASCII)
_FETCH_CHUNK = 500


class _ExpandFailed(Exception):
    """A path cannot be expanded (PocketBase logs it and skips the path)."""


@dataclass(eq=False)
class _Node:
    """One record during expansion; `expand` None until a path reaches it."""

    coll: Collection
    record: Record
    expand: dict[str, _Node | list[_Node]] | None = None
    back: dict[str, list[str]] = field(default_factory=dict)  # back-relation ids by name
    managed: bool = False  # the caller passes its `manageRule`: the email is shown

    @property
    def id(self) -> str:
        return str(self.record["id"])

    def relation_ids(self, name: str) -> list[str]:
        value = self.back[name] if name in self.back else self.record.get(name)
        items = value if isinstance(value, list) else [value]
        out: list[str] = []
        for item in items:
            if isinstance(item, str) and item and item not in out:
                out.append(item)
        return out

    def merge_expand(self, incoming: dict[str, _Node | list[_Node]] | None) -> None:
        """PocketBase's `Record.MergeExpand`: lists are unioned by id, equal ids merged deep."""
        if not incoming:
            return
        if self.expand is None:
            self.expand = dict(incoming)
            return
        for key, new in incoming.items():
            if key not in self.expand:
                self.expand[key] = new
                continue
            old = self.expand[key]
            old_list = list(old) if isinstance(old, list) else [old]
            new_list = new if isinstance(new, list) else [new]
            indexed = {n.id: n for n in old_list}
            for node in new_list:
                if node.id in indexed:
                    indexed[node.id].merge_expand(node.expand)
                else:
                    old_list.append(node)
            many = isinstance(old, list) or isinstance(new, list) or not old_list
            self.expand[key] = old_list if many else old_list[0]


def normalize_expands(expand: str) -> list[str]:
    """PocketBase's `normalizeExpands` over the comma-separated `expand` parameter."""
    paths = [p.replace(" ", "").strip(".") for p in expand.split(",")]
    paths = [p for p in paths if p]
    kept = [
        p
        for i, p in enumerate(paths)
        if not any(j != i and other.startswith(p + ".") for j, other in enumerate(paths))
    ]
    return list(dict.fromkeys(kept))


def expand_records(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    records: list[Record],
    expand: str,
    info: RequestInfo,
) -> dict[str, dict[str, Any]]:
    """See the module docstring: record id -> serialized `expand` object, for the records
    that got one."""
    if not records or not expand:
        return {}
    paths = normalize_expands(expand)
    if not paths:
        return {}
    expander = _Expander(conn, schema, info.with_context("expand"))
    nodes = [_Node(coll, record) for record in records]
    for path in paths:
        try:
            expander.expand(nodes, path, 1)
        except (_ExpandFailed, FilterError, sqlite3.Error):
            continue
    return {n.id: expander.serialize_expand(n.expand) for n in nodes if n.expand is not None}


class _Expander:
    def __init__(self, conn: sqlite3.Connection, schema: Schema, info: RequestInfo) -> None:
        self.conn = conn
        self.schema = schema
        self.info = info

    def expand(self, nodes: list[_Node], path: str, level: int) -> None:
        if not path or level > MAX_EXPAND_DEPTH or not nodes:
            return
        main = nodes[0].coll
        name, _, rest = path.partition(".")
        match = (_VIA_OLD if "(" in name else _VIA).match(name)
        if match:
            target, multiple = self._prepare_back(nodes, name, match)
        else:
            f = main.field(name)
            if f is None or f.type != "relation":
                raise _ExpandFailed(f"no relation field {name!r} in {main.name!r}")
            found = self.schema.find(f.collection_id)
            if found is None:
                raise _ExpandFailed(f"no related collection {f.collection_id!r}")
            target, multiple = found, f.is_multiple
        ids: list[str] = []
        for node in nodes:
            for rid in node.relation_ids(name):
                if rid not in ids:
                    ids.append(rid)
        fetched = self._fetch(target, ids)
        managed = managed_ids(self.conn, self.schema, target, fetched, self.info)
        rels = [_Node(target, r, managed=str(r["id"]) in managed) for r in fetched]
        if rest:
            self.expand(rels, rest, level + 1)
        indexed = {rel.id: rel for rel in rels}
        for node in nodes:
            if node.expand is None:
                node.expand = {}
            valid = [indexed[rid] for rid in node.relation_ids(name) if rid in indexed]
            if not valid:
                continue
            previous = node.expand.get(name)
            for old in previous if isinstance(previous, list) else [previous] if previous else []:
                for rel in valid:
                    if rel.id == old.id:
                        rel.merge_expand(old.expand)
            node.expand[name] = valid if multiple else valid[0]

    def _prepare_back(
        self, nodes: list[_Node], name: str, match: re.Match[str]
    ) -> tuple[Collection, bool]:
        """Load the ids of a back-relation onto each node; its collection and multiplicity."""
        main = nodes[0].coll
        ref = self.schema.find(match.group(1))
        if ref is None:
            raise _ExpandFailed(f"no back-related collection {match.group(1)!r}")
        f = ref.field(match.group(2))
        if f is None or f.type != "relation" or f.collection_id != main.id:
            raise _ExpandFailed(f"no back-relation field {match.group(2)!r} in {ref.name!r}")
        table, col = quote(ref.name), quote(f.name)
        if f.is_multiple:
            where = f"EXISTS (SELECT 1 FROM json_each({table}.{col}) je WHERE je.value = ?)"
        else:
            where = f"{table}.{col} = ?"
        sql = f"SELECT {table}.id FROM {table} WHERE {where} LIMIT {MAX_BACK_RELATIONS}"
        for node in nodes:
            ids = [str(row[0]) for row in self.conn.execute(sql, (node.id,))]
            if ids:
                node.back[name] = ids
        return ref, not _has_unique_index(ref, f.name)

    def _fetch(self, coll: Collection, ids: list[str]) -> list[Record]:
        """The records `ids` of `coll` the caller may view (PocketBase's `expandFetch`)."""
        superuser = self.info.is_superuser
        if not superuser and coll.viewRule is None:
            raise _ExpandFailed(f"only superusers can view collection {coll.name!r} records")
        rule = None if superuser else coll.viewRule
        names = [f.name for f in coll.fields]
        out: list[Record] = []
        for start in range(0, max(len(ids), 1), _FETCH_CHUNK):
            chunk = ids[start : start + _FETCH_CHUNK]
            query = build_records_query(
                coll, self.schema, self.info, rule=rule, superuser=superuser
            )
            if not chunk:
                return out  # the rule compiled: nothing to fetch
            marks = {f"__expand_id{i}": rid for i, rid in enumerate(chunk)}
            in_list = ", ".join(f":{k}" for k in marks)
            query.and_where(Expr(f"{quote_column(coll.name + '.id')} IN ({in_list})", marks))
            built = query.build(select_columns(coll, coll.name))
            out.extend(
                row_to_record(coll, names, row)
                for row in self.conn.execute(built.sql, built.params)
            )
        return out

    def serialize_expand(self, expand: dict[str, _Node | list[_Node]] | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in (expand or {}).items():
            if isinstance(value, list):
                out[key] = [self._serialize(n) for n in value]
            else:
                out[key] = self._serialize(value)
        return out

    def _serialize(self, node: _Node) -> dict[str, Any]:
        nested = None if node.expand is None else self.serialize_expand(node.expand)
        return serialize(node.coll, node.record, self.info, nested, show_email=node.managed)


def _has_unique_index(coll: Collection, name: str) -> bool:
    for raw in coll.indexes:
        idx = parse_index(raw)
        if idx.unique and len(idx.columns) == 1 and idx.columns[0].name.lower() == name.lower():
            return True
    return False


# ---------------------------------------------------------------------------- fields picker
# PocketBase's `tools/picker`: a flat map of dotted names -> modifier; at each level a key is
# kept when some name equals it or starts with it and a dot, `*` stands for every key of its
# level that no other name mentions (`expand` included), an exact name keeps the whole value.
_EXCERPT_MODIFIER = re.compile(r"^excerpt\(\s*(\d+)\s*(?:,\s*(\w+)\s*)?\)$")
_TAGS = re.compile(r"<[^>]*>")
_SPACES = re.compile(r"\s+")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})

Excerpt = tuple[int, bool]


def _excerpt(value: Any, max_len: int, ellipsis: bool) -> Any:
    if not isinstance(value, str):
        return value
    text = _SPACES.sub(" ", html.unescape(_TAGS.sub(" ", value))).strip()
    if len(text) > max_len:
        text = text[:max_len].rstrip()
        if ellipsis:
            text += "..."
    return text


def _parse_fields(fields: str) -> dict[str, Excerpt | None]:
    parsed: dict[str, Excerpt | None] = {}
    try:
        items = tokenize(fields)
    except UnbalancedError as exc:
        raise bad_request() from exc  # as PocketBase's picker fails the response
    for item in items:
        name, sep, modifier = item.partition(":")
        match = _EXCERPT_MODIFIER.match(modifier.strip()) if sep else None
        if match is None:
            parsed[item if sep else name] = None
            continue
        parsed[name] = (int(match.group(1)), (match.group(2) or "") in _TRUE)
    return parsed


def _pick_any(data: Any, fields: dict[str, Excerpt | None]) -> None:
    if isinstance(data, dict):
        _pick_map(data, fields)
    elif isinstance(data, list) and data and isinstance(data[0], dict):
        for item in data:
            if isinstance(item, dict):
                _pick_map(item, fields)


def _pick_map(data: dict[str, Any], fields: dict[str, Excerpt | None]) -> None:
    if not fields:
        return
    if "*" in fields:
        star = fields["*"]
        for key in list(data):
            if not any((f + ".").startswith(key + ".") for f in fields):
                fields[key] = star
    for key in list(data):
        prefix = key + "."
        matching = {f: m for f, m in fields.items() if (f + ".").startswith(prefix)}
        if not matching:
            del data[key]
            continue
        rest: dict[str, Excerpt | None] = {}
        for f, modifier in matching.items():
            remains = (f + ".")[len(prefix) :].removesuffix(".")
            if remains == "":
                if modifier is not None:
                    data[key] = _excerpt(data[key], *modifier)
                break
            rest[remains] = modifier
        else:
            _pick_any(data[key], rest)


def pick_fields(data: Any, fields: str) -> Any:
    """See the module docstring (`fields` "" returns `data` unchanged; a picked copy else)."""
    if not fields.strip():
        return data
    picked = orjson.loads(orjson.dumps(data))
    _pick_any(picked, _parse_fields(fields))
    return picked
