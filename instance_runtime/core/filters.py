"""The filter compiler behind `core.rules` (its `build_filter` / `build_sort` /
`filter_collection_ids` seam), over `field_resolver`.

Each call compiles one expression with its own resolver; placeholder names and join aliases
are scoped per call (a process-wide counter), so the fragments of a rule, a filter and a sort
can be concatenated into one statement.

For the records list use `build_list_query` instead of three fragments: PocketBase compiles
the list rule, the filter and the sort of one request with ONE resolver, so they share their
joins (a multi-valued relation used by two of them is matched on the same related row), and
a sort that joins another collection (`sort=author.name`) applies that collection's list
rule to the WHERE clause for non-superusers (a sort fragment carries it as an inner join).

Errors: malformed input raises `FilterError` (a `ValueError`, turned into the 400 by
`core.rules`); a client filter or sort (`allow_hidden=False`, i.e. not a superuser's) naming
`@collection.` or `@request.` raises PocketBase's 403 `ApiError`.
"""

from __future__ import annotations

import itertools
import sqlite3

from instance_runtime.core.errors import ApiError
from instance_runtime.core.field_resolver import (
    RecordFieldResolver,
    build_records_query,
    superuser_only_violation,
)
from instance_runtime.core.models import COLLECTIONS_TABLE, Collection
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.rules import SqlFragment
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.search import (
    MAX_FILTER_LENGTH,
    Names,
    SelectQuery,
    SimpleFieldResolver,
)
from instance_runtime.tools.search import (
    build_filter as compile_filter,
)
from instance_runtime.tools.search import (
    build_sort as compile_sort,
)

COLLECTION_FILTER_FIELDS = ("id", "created", "updated", "name", "system", "type")
_scopes = itertools.count(1)


def _resolver(
    schema: Schema, coll: Collection, info: RequestInfo, allow_hidden: bool
) -> RecordFieldResolver:
    scope = f"_{next(_scopes)}_"
    return RecordFieldResolver(
        schema, coll, info, allow_hidden, names=Names(scope), alias_suffix=scope.rstrip("_")
    )


def _fragment(resolver: RecordFieldResolver, query: SelectQuery, order: str = "") -> SqlFragment:
    resolver.update_query(query)
    where = query.where()
    params = dict(where.params) if where is not None else {}
    joins: list[str] = []
    for join in query.joins:
        built = join.build()
        joins.append(built.sql)
        params.update(built.params)
    if order and where is not None:
        # A sort has no WHERE of its own: the list rules of the collections it joined filter
        # the rows through an inner join on a one-row table (same effect as a WHERE term).
        alias = quote(resolver.names.alias("__sort_rules"))
        joins.append(f"INNER JOIN (SELECT 1) {alias} ON {where.sql}")
    return SqlFragment(
        sql=order or (where.sql if where is not None else ""),
        params=params,
        joins="".join(" " + j for j in joins) + (" " if joins else ""),
        distinct=query.distinct,
    )


def _forbid(expr: str, allow_hidden: bool) -> None:
    if not allow_hidden:
        message = superuser_only_violation(expr)
        if message is not None:
            raise ApiError(403, message)


def build_filter(
    schema: Schema, coll: Collection, expr: str, info: RequestInfo, *, allow_hidden: bool
) -> SqlFragment:
    """`expr` (a rule with `allow_hidden=True`, a client filter otherwise) as a fragment."""
    _forbid(expr, allow_hidden)
    resolver = _resolver(schema, coll, info, allow_hidden)
    query = SelectQuery(coll.name)
    max_length = None if allow_hidden and not info.is_superuser else MAX_FILTER_LENGTH
    query.and_where(compile_filter(expr, resolver, max_length=max_length))
    return _fragment(resolver, query)


def build_sort(
    schema: Schema, coll: Collection, sort: str, info: RequestInfo, *, allow_hidden: bool
) -> SqlFragment:
    """ORDER BY terms (comma separated, no keyword) for `sort`, with the joins they need."""
    _forbid(sort, allow_hidden)
    resolver = _resolver(schema, coll, info, allow_hidden)
    terms = compile_sort(sort, resolver, coll.name)
    if not terms:
        return SqlFragment()
    return _fragment(resolver, SelectQuery(coll.name), ", ".join(terms))


def build_list_query(
    schema: Schema, coll: Collection, info: RequestInfo, *, filter: str = "", sort: str = ""
) -> SelectQuery:
    """The records list query of `coll` for `info` (rule unless superuser, filter, sort), as
    PocketBase builds it. The caller answers 403 for a `None` list rule first; this raises the
    403 for `@collection.`/`@request.` in a non-superuser's filter or sort, `FilterError` for
    the 400s. Run `query.build(columns, limit=..., offset=...)` and
    `query.build_count("id" if coll.is_view else "_rowid_")`."""
    if not info.is_superuser:
        _forbid(filter, False)
        _forbid(sort, False)
    return build_records_query(
        coll,
        schema,
        info,
        rule=coll.listRule,
        filter=filter,
        sort=sort,
        superuser=info.is_superuser,
    )


def filter_collection_ids(conn: sqlite3.Connection, expr: str) -> set[str]:
    """Ids of the collections matching `expr` over id, created, updated, name, system, type."""
    resolver = SimpleFieldResolver(*COLLECTION_FILTER_FIELDS)
    where = compile_filter(expr, resolver, max_length=MAX_FILTER_LENGTH)
    sql = f"SELECT {quote('id')} FROM {quote(COLLECTIONS_TABLE)} WHERE {where.sql}"
    return {str(row[0]) for row in conn.execute(sql, where.params)}
