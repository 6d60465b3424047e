"""Reading records: row -> record, record -> API JSON, view and list with rules.

Contract:

- A *record* is a `dict` of field name -> API value (as `fields.from_db` returns it) for every
  field of its collection, hidden ones included. `serialize` turns it into PocketBase's JSON:
  keys sorted, `collectionId`/`collectionName` added, hidden fields dropped, an auth record's
  `email` dropped unless `emailVisibility`, the owner or a superuser asks.
- `find(conn, coll, id)` returns a record or None; `fetch_many` several by id.
- `list_records(conn, schema, coll, params, info)` applies the list rule (None: superusers only,
  403), the `filter`, `sort`, `page`, `perPage` (max 1000), `skipTotal` query parameters and
  returns PocketBase's list result (items not yet serialized). Malformed input is a 400.
- `check_rule(conn, schema, coll, rule, record_id, info)` is True when the record passes `rule`
  (rule "" = everyone, None = superusers only; a superuser passes every rule).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from instance_runtime.core import rules
from instance_runtime.core.errors import ApiError, bad_request, superusers_only
from instance_runtime.core.fields import from_db
from instance_runtime.core.models import Collection, Field
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote

MAX_PER_PAGE = 1000
DEFAULT_PER_PAGE = 30

Record = dict[str, Any]


def row_to_record(coll: Collection, names: list[str], row: Iterable[Any]) -> Record:
    record: Record = {}
    for name, raw in zip(names, row, strict=False):
        f = coll.field(name)
        if f is not None:
            record[name] = from_db(f, raw)
    for f in coll.fields:
        if f.name not in record:
            record[f.name] = f.zero_value()
    return record


def select_columns(coll: Collection, alias: str | None = None) -> str:
    prefix = f"{quote(alias)}." if alias else ""
    return ", ".join(prefix + quote(f.name) for f in coll.fields)


def find(conn: sqlite3.Connection, coll: Collection, record_id: str) -> Record | None:
    cur = conn.execute(
        f"SELECT {select_columns(coll)} FROM {quote(coll.name)} WHERE id = ? LIMIT 1",
        (record_id,),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return row_to_record(coll, [f.name for f in coll.fields], row)


def fetch_many(conn: sqlite3.Connection, coll: Collection, ids: list[str]) -> dict[str, Record]:
    """Records by id (missing ids are absent from the result)."""
    out: dict[str, Record] = {}
    names = [f.name for f in coll.fields]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join("?" for _ in chunk)
        cur = conn.execute(
            f"SELECT {select_columns(coll)} FROM {quote(coll.name)} WHERE id IN ({marks})", chunk
        )
        for row in cur:
            record = row_to_record(coll, names, row)
            out[str(record["id"])] = record
    return out


def _email_visible(coll: Collection, record: Record, info: RequestInfo) -> bool:
    if info.is_superuser or record.get("emailVisibility"):
        return True
    return (
        info.auth is not None
        and info.auth_collection is not None
        and info.auth_collection.id == coll.id
        and info.auth_id == record.get("id")
    )


def serialize(
    coll: Collection,
    record: Record,
    info: RequestInfo,
    expand: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """PocketBase's JSON for one record (see the module docstring)."""
    out: dict[str, Any] = {"collectionId": coll.id, "collectionName": coll.name}
    for f in coll.fields:
        if coll.is_auth and f.name in ("password", "tokenKey"):
            continue  # never exported, not even to superusers
        if f.hidden and not info.is_superuser:
            continue
        if f.type == "password":
            out[f.name] = ""
            continue
        out[f.name] = record.get(f.name, f.zero_value())
    if coll.is_auth and "email" in out and not _email_visible(coll, record, info):
        del out["email"]
    if expand:
        out["expand"] = expand
    return dict(sorted(out.items()))


@dataclass
class ListParams:
    page: int = 1
    per_page: int = DEFAULT_PER_PAGE
    sort: str = ""
    filter: str = ""
    skip_total: bool = False

    @classmethod
    def parse(cls, query: dict[str, str]) -> ListParams:
        """The list parameters of a query string; a non-numeric page/perPage is a 400."""

        def _int(name: str, default: int) -> int:
            raw = query.get(name, "")
            if raw == "":
                return default
            try:
                return int(raw)
            except ValueError:
                raise bad_request() from None

        page = max(_int("page", 1), 1)
        per_page = _int("perPage", DEFAULT_PER_PAGE)
        if per_page <= 0:
            per_page = DEFAULT_PER_PAGE
        per_page = min(per_page, MAX_PER_PAGE)
        skip = query.get("skipTotal", "").lower() in ("1", "true", "t")
        return cls(page, per_page, query.get("sort", ""), query.get("filter", ""), skip)


def list_records(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    params: ListParams,
    info: RequestInfo,
) -> dict[str, Any]:
    """See the module docstring; `items` holds records (not serialized)."""
    if coll.listRule is None and not info.is_superuser:
        raise superusers_only()
    table = quote(coll.name)
    parts: list[rules.SqlFragment] = []
    if not info.is_superuser and coll.listRule:
        parts.append(rules.build_filter(schema, coll, coll.listRule, info, allow_hidden=True))
    if params.filter and not params.filter.strip():
        raise bad_request()
    if params.filter:
        parts.append(
            rules.build_filter(schema, coll, params.filter, info, allow_hidden=info.is_superuser)
        )
    order = rules.build_sort(schema, coll, params.sort, info, allow_hidden=info.is_superuser)
    joins = "".join(p.joins for p in [*parts, order])
    where = " AND ".join(f"({p.sql})" for p in parts) or "1=1"
    where_params: dict[str, Any] = {}
    for p in [*parts, order]:
        where_params.update(p.params)
    distinct = any(p.distinct for p in [*parts, order])
    base_from = f"FROM {table} {joins} WHERE {where}"
    cols = select_columns(coll, coll.name)
    sql = f"SELECT {'DISTINCT ' if distinct else ''}{cols} {base_from}"
    if order.sql:
        sql += f" ORDER BY {order.sql}"
    sql += " LIMIT :_limit OFFSET :_offset"
    values = dict(where_params)
    values["_limit"] = params.per_page
    values["_offset"] = (params.page - 1) * params.per_page
    try:
        cur = conn.execute(sql, values)
        names = [f.name for f in coll.fields]
        items = [row_to_record(coll, names, row) for row in cur]
        total = -1
        if not params.skip_total:
            count_col = f"{table}.id" if coll.is_view else f"{table}._rowid_"
            count_sql = (
                f"SELECT COUNT(DISTINCT {count_col}) {base_from}"
                if distinct
                else f"SELECT COUNT(*) {base_from}"
            )
            total = int(conn.execute(count_sql, where_params).fetchone()[0])
    except sqlite3.Error as exc:
        raise bad_request() from exc
    return {
        "items": items,
        "page": params.page,
        "perPage": params.per_page,
        "totalItems": total,
        "totalPages": -1 if total < 0 else math.ceil(total / params.per_page),
    }


def check_rule(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    rule: str | None,
    record_id: str,
    info: RequestInfo,
) -> bool:
    """See the module docstring."""
    if info.is_superuser:
        return True
    if rule is None:
        return False
    table = quote(coll.name)
    if rule == "":
        sql = f"SELECT 1 FROM {table} WHERE {table}.id = :_id LIMIT 1"
        values: dict[str, Any] = {"_id": record_id}
    else:
        frag = rules.build_filter(schema, coll, rule, info, allow_hidden=True)
        sql = f"SELECT 1 FROM {table} {frag.joins} WHERE {table}.id = :_id AND ({frag.sql}) LIMIT 1"
        values = {**frag.params, "_id": record_id}
    try:
        return conn.execute(sql, values).fetchone() is not None
    except sqlite3.Error as exc:
        raise bad_request() from exc


def view_record(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record_id: str,
    info: RequestInfo,
) -> Record:
    """The record `record_id` if the view rule lets `info` see it (403 / 404 otherwise)."""
    if coll.viewRule is None and not info.is_superuser:
        raise superusers_only()
    record = find(conn, coll, record_id)
    if record is None or not check_rule(conn, schema, coll, coll.viewRule, record_id, info):
        raise ApiError(404, "The requested resource wasn't found.")
    return record


def relation_targets(schema: Schema, f: Field) -> Collection | None:
    return schema.find(f.collection_id) if f.type == "relation" else None
