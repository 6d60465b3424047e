"""Reading records: row -> record, record -> API JSON, view and list with rules.

Contract:

- A *record* is a `dict` of field name -> API value (as `fields.from_db` returns it) for every
  field of its collection, hidden ones included. `serialize` turns it into PocketBase's JSON:
  keys sorted, `collectionId`/`collectionName` added, hidden fields dropped, an auth record's
  `email` dropped unless `emailVisibility`, the owner or a superuser asks; `expand` is added
  when it is not None (an empty one too, as PocketBase sends it).
- `find(conn, coll, id)` returns a record or None; `fetch_many` several by id.
- `list_records(conn, schema, coll, params, info)` applies the list rule (None: superusers only,
  403), the `filter`, `sort`, `page`, `perPage` (max 1000), `skipTotal` query parameters and
  returns PocketBase's list result (items not yet serialized). Malformed input is a 400.
- `check_rule(conn, schema, coll, rule, record_id, info)` is True when the record passes `rule`
  (rule "" = everyone, None = superusers only; a superuser passes every rule).
- `view_record` finds the record under its view rule in one query (404 either way).
- Rows are decoded and records serialized through their collection's plan (`core.record_codec`).
"""

from __future__ import annotations

import math
import re
import sqlite3
from collections.abc import Sequence
from typing import Any

from instance_runtime.core import rules
from instance_runtime.core.errors import ApiError, bad_request, superusers_only
from instance_runtime.core.field_resolver import build_records_query, superuser_only_violation
from instance_runtime.core.fields import from_db
from instance_runtime.core.models import Collection, Field
from instance_runtime.core.record_codec import codec_of, email_visible
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.search import Expr

MAX_PER_PAGE = 1000
DEFAULT_PER_PAGE = 30

Record = dict[str, Any]
_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def row_to_record(coll: Collection, names: list[str], row: Sequence[Any]) -> Record:
    codec = codec_of(coll)
    if names == codec.names and len(row) == len(names):
        return codec.decode(row)
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
    return codec_of(coll).decode(row)


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


def managed_ids(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    items: list[Record],
    info: RequestInfo,
) -> set[str]:
    """Ids of the auth records among `items` whose `manageRule` the caller satisfies (their
    email is shown whatever its visibility). PocketBase: only a non-empty rule counts; a rule
    that cannot run manages nothing."""
    rule = coll.rule("manageRule") if coll.is_auth else None
    if not rule or not items or info.is_superuser:
        return set()
    ids = [str(item["id"]) for item in items]
    out: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = {f"__managed{i}": rid for i, rid in enumerate(ids[start : start + 500])}
        try:
            query = build_records_query(coll, schema, info, rule=rule)
            marks = ", ".join(f":{k}" for k in chunk)
            query.and_where(Expr(f"{quote(coll.name)}.{quote('id')} IN ({marks})", chunk))
            built = query.build(f"{quote(coll.name)}.{quote('id')}")
            out.update(str(row[0]) for row in conn.execute(built.sql, built.params))
        except (ValueError, sqlite3.Error):
            return set()
    return out


def serialize(
    coll: Collection,
    record: Record,
    info: RequestInfo,
    expand: dict[str, Any] | None = None,
    *,
    show_email: bool = False,
) -> dict[str, Any]:
    """PocketBase's JSON for one record (see the module docstring); `show_email` keeps an
    auth record's email whatever its visibility (a record the caller manages)."""
    codec = codec_of(coll)
    if codec.fast:  # the same, from an order of keys worked out once
        return codec.serialize(record, info, expand, show_email=show_email)
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
    if coll.is_auth and "email" in out and not show_email and not email_visible(coll, record, info):
        del out["email"]
    if expand is not None:
        out["expand"] = expand
    return dict(sorted(out.items()))


class ListParams:
    """`page`, `perPage`, `sort`, `filter`, `skipTotal` of a list request.

    `parse` never raises: a value Go would not parse makes the request a 400 once `page`,
    `per_page` or `skip_total` is read (or `check()` is called), so that the 403s PocketBase
    answers first (list rule None, `@request.`/`@collection.` in a guest's filter) come first.
    """

    def __init__(
        self,
        page: int = 1,
        per_page: int = DEFAULT_PER_PAGE,
        sort: str = "",
        filter: str = "",
        skip_total: bool = False,
        *,
        invalid: bool = False,
    ) -> None:
        self._page, self._per_page, self._skip_total = page, per_page, skip_total
        self.sort, self.filter = sort, filter
        self.invalid = invalid

    def check(self) -> None:
        """The 400 for a page, perPage or skipTotal PocketBase refuses."""
        if self.invalid:
            raise bad_request()

    @property
    def page(self) -> int:
        self.check()
        return self._page

    @property
    def per_page(self) -> int:
        self.check()
        return self._per_page

    @property
    def skip_total(self) -> bool:
        self.check()
        return self._skip_total

    @property
    def offset(self) -> int:
        """`perPage * (page - 1)` as Go's int64 computes it (a wrapped, negative one is 0)."""
        wrapped = (self.per_page * (self.page - 1) + 2**63) % 2**64 - 2**63
        return max(wrapped, 0)

    def result(self, items: list[Any], total: int) -> dict[str, Any]:
        """PocketBase's search result for one page of `items` out of `total` (-1 with
        `skipTotal`: the totals are then -1 too)."""
        return {
            "items": items,
            "page": self.page,
            "perPage": self.per_page,
            "totalItems": total,
            "totalPages": -1 if total < 0 else math.ceil(total / self.per_page),
        }

    @classmethod
    def parse(cls, query: dict[str, str]) -> ListParams:
        """The list parameters of a query string, parsed as PocketBase's search provider does
        (Go's `strconv.Atoi` and `strconv.ParseBool`)."""
        invalid = False

        def _int(name: str, default: int) -> int:
            nonlocal invalid
            raw = query.get(name, "")
            if raw == "":
                return default
            if not _GO_INT.fullmatch(raw) or not -(2**63) <= int(raw) < 2**63:
                invalid = True
                return default
            return int(raw)

        raw_skip = query.get("skipTotal", "")
        if raw_skip and raw_skip not in _GO_TRUE and raw_skip not in _GO_FALSE:
            invalid = True
        page = max(_int("page", 1), 1)
        per_page = _int("perPage", DEFAULT_PER_PAGE)
        if per_page <= 0:
            per_page = DEFAULT_PER_PAGE
        per_page = min(per_page, MAX_PER_PAGE)
        return cls(
            page,
            per_page,
            query.get("sort", ""),
            query.get("filter", ""),
            raw_skip in _GO_TRUE,
            invalid=invalid,
        )


def list_records(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    params: ListParams,
    info: RequestInfo,
) -> dict[str, Any]:
    """See the module docstring; `items` holds records (not serialized). As PocketBase: the
    list rule, the filter and the sort are compiled with one resolver (they share joins), in
    PocketBase's order of refusals (403s first, then the paging, then the expressions)."""
    if coll.listRule is None and not info.is_superuser:
        raise superusers_only()
    if not info.is_superuser:
        message = superuser_only_violation(params.filter, params.sort)
        if message is not None:
            raise ApiError(403, message)
    params.check()
    try:
        query = build_records_query(
            coll,
            schema,
            info,
            rule=coll.listRule,
            filter=params.filter,
            sort=params.sort,
            superuser=info.is_superuser,
        )
    except ApiError:
        raise
    except Exception as exc:
        raise bad_request() from exc
    page = query.build(select_columns(coll, coll.name), limit=params.per_page, offset=params.offset)
    try:
        decode = codec_of(coll).decode
        items = [decode(row) for row in conn.execute(page.sql, page.params)]
        total = -1
        if not params.skip_total:
            count = query.build_count("id" if coll.is_view else "_rowid_")
            total = int(conn.execute(count.sql, count.params).fetchone()[0])
    except sqlite3.Error as exc:
        raise bad_request() from exc
    return params.result(items, total)


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
    rule = coll.viewRule
    if rule is None and not info.is_superuser:
        raise superusers_only()
    if rule and not info.is_superuser:
        found = _find_under_rule(conn, schema, coll, rule, record_id, info)
        if found is not None:
            if not found:
                raise ApiError(404, "The requested resource wasn't found.")
            return found[0]
    record = find(conn, coll, record_id)
    # rule "" (everyone) or a superuser: finding the record was the check
    if record is None or (rule and not check_rule(conn, schema, coll, rule, record_id, info)):
        raise ApiError(404, "The requested resource wasn't found.")
    return record


def _find_under_rule(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    rule: str,
    record_id: str,
    info: RequestInfo,
) -> list[Record] | None:
    """`find` and `check_rule` in one query: `[record]`, or `[]` when there is none that
    passes; None when the rule does not compile or its query fails (the caller then answers
    as the two steps do: 404 for a missing record before the rule's 400)."""
    try:
        frag = rules.build_filter(schema, coll, rule, info, allow_hidden=True)
    except ApiError:
        return None
    table = quote(coll.name)
    sql = (
        f"SELECT {select_columns(coll, coll.name)} FROM {table} {frag.joins}"
        f" WHERE {table}.id = :_id AND ({frag.sql}) LIMIT 1"
    )
    try:
        row = conn.execute(sql, {**frag.params, "_id": record_id}).fetchone()
    except sqlite3.Error:
        return None  # the two steps tell a missing record (404) from this error (400)
    return [] if row is None else [codec_of(coll).decode(row)]


def relation_targets(schema: Schema, f: Field) -> Collection | None:
    return schema.find(f.collection_id) if f.type == "relation" else None
