"""Filters, sorts and API rules over records: the runtime's `FieldResolver` and entry points.

Two ways to wire it (both raise `FilterError`, a `ValueError`, for the 400):

1. `core.filters` implements the `core.rules` seam (one expression per call).
2. Exact PocketBase semantics for the records list (rule + filter + sort compiled with ONE
   resolver, so they share joins; the 403 for `@collection.`/`@request.` first):

    if not info.is_superuser and (msg := superuser_only_violation(filter, sort)):
        raise ApiError(403, msg)
    q = build_records_query(coll, schema, info, rule=coll.listRule, filter=filter,
                            sort=sort, superuser=info.is_superuser)
    page = q.build(select_columns(coll, coll.name), limit=per_page, offset=offset)
    rows = conn.execute(page.sql, page.params)
    count = q.build_count("id" if coll.is_view else "_rowid_")
    # one record under a rule (view/update/delete, create check inside its transaction):
    one = build_record_query(coll, schema, info, record_id, rule=coll.viewRule,
                             superuser=info.is_superuser).build()

The caller still answers 403 for a `None` rule and a non-superuser; `rule=None` or `""` adds
no condition here. Semantics are PocketBase 0.40's: a rule is compiled with hidden fields
allowed, a client filter/sort with hidden fields allowed only for superusers; a
non-superuser's filter that joins another collection gets that collection's list rule ANDed
(`id='' || (rule)`), and a join to a superuser-only collection is refused; joins make the
query `DISTINCT`. `info.auth` is the authenticated record with every field plus
`collectionId`/`collectionName` (None for a guest: `@request.auth.*` is NULL, so
`@request.auth.id = ""` holds).
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from instance_runtime.core.field_resolver_runner import (
    MISSING,
    extract_nested,
    resolve_path,
    split_modifier,
)
from instance_runtime.core.models import Collection, CollectionLookup
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.tools.search import (
    MAX_FILTER_LENGTH,
    Expr,
    FilterError,
    Join,
    Names,
    ResolverResult,
    SelectQuery,
    SelectQueryLike,
    build_filter,
    build_sort,
    quote_column,
)
from instance_runtime.tools.search.compiler import go_string
from instance_runtime.tools.search.errors import q
from instance_runtime.tools.search.simple import matches_allowed

SUPERUSER_ONLY_PREFIXES = ("@collection.", "@request.")
ALLOWED_FIELDS: tuple[str, ...] = (
    r"^\w+[\w\.\:]*$",
    r"^\@request\.context$",
    r"^\@request\.method$",
    r"^\@request\.auth\.[\w\.\:]*\w+$",
    r"^\@request\.body\.[\w\.\:]*\w+$",
    r"^\@request\.query\.[\w\.\:]*\w+$",
    r"^\@request\.headers\.[\w\.\:]*\w+$",
    r"^\@collection\.\w+(\:\w+)?\.[\w\.\:]*\w+$",
)
_FLOAT = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|infinity|nan)", re.I)


class RecordFieldResolver:
    """`FieldResolver` over one collection (see `field_resolver_runner` for the paths).

    `allow_hidden_fields` may be switched between compiling the rule and the client filter.
    Joins registered while resolving are added by `update_query`, together with the list
    rules of collections a restricted filter joined.
    """

    def __init__(
        self,
        schema: CollectionLookup,
        collection: Collection,
        request_info: RequestInfo | None,
        allow_hidden_fields: bool,
        *,
        names: Names | None = None,
        base_alias: str = "",
        alias_suffix: str = "",
    ) -> None:
        self.schema = schema
        self.base_collection = collection
        self.request_info = request_info
        self.allow_hidden_fields = allow_hidden_fields
        self.base_alias = base_alias
        self.alias_suffix = alias_suffix
        self.allowed_fields: tuple[str, ...] = ALLOWED_FIELDS
        self.joins: list[Join] = []
        self.rule_joins: list[tuple[Collection, str]] = []
        self._names = names or Names()
        self.static_info: dict[str, Any] = {}
        if request_info is not None:
            self.static_info = {
                "context": request_info.context,
                "method": request_info.method,
                "query": request_info.query,
                "headers": request_info.headers,
                "body": request_info.body,
                "auth": request_info.auth,
            }

    @property
    def names(self) -> Names:
        return self._names

    def load_collection(self, name_or_id: str) -> Collection | None:
        base = self.base_collection
        if name_or_id in (base.name, base.id):
            return base
        return self.schema.find(name_or_id)

    def resolve(self, field: str) -> ResolverResult:
        if self.allowed_fields and not matches_allowed(field, self.allowed_fields):
            raise FilterError(f"failed to resolve field {q(field)}")
        return resolve_path(self, field)

    def register_join(self, join: Join, collection: Collection | None = None) -> None:
        """Remember `join` (replacing one with the same alias); `collection` is the joined
        collection, whose list rule restricts a filter compiled without hidden fields."""
        if collection is not None and not self.allow_hidden_fields:
            if collection.listRule is None:
                raise FilterError(
                    f"{q(collection.name)} fields can be accessed only when allowHiddenFields"
                    " is enabled or by superusers"
                )
            self.rule_joins = [(c, a) for c, a in self.rule_joins if a != join.alias]
            self.rule_joins.append((collection, join.alias))
        for i, existing in enumerate(self.joins):
            if existing.alias == join.alias:
                self.joins[i] = join
                return
        self.joins.append(join)

    def resolve_static(self, path: list[str]) -> ResolverResult:
        """`@request.<path>` from the request data (missing -> NULL; `:isset`, `:lower`)."""
        path = list(path)
        last, modifier = split_modifier(path[-1])
        path[-1] = last
        value = extract_nested(self.static_info, path)
        if modifier == "isset":
            return ResolverResult("FALSE" if value is MISSING else "TRUE")
        if value is MISSING:
            value = None
        if isinstance(value, str):
            number_field = self.base_collection.field(path[-1])
            is_number = number_field is not None and number_field.type == "number"
            if is_number and _FLOAT.fullmatch(value):
                value = float(value)
        elif value is not None and not isinstance(value, bool | int | float):
            value = _stringify(value)
        if modifier and modifier != "lower":
            raise FilterError(f"invalid modifier sequence {last}:{modifier}")
        if value is None:
            return ResolverResult("NULL")
        name = self._names.param("f")
        if modifier == "lower":
            return ResolverResult(f"LOWER(:{name})", {name: value})
        return ResolverResult(f":{name}", {name: value})

    def update_query(self, query: SelectQueryLike) -> None:
        if self.joins:
            query.distinct = True
            for join in self.joins:
                query.left_join(join)
        for collection, alias in self.rule_joins:
            self._apply_list_rule(collection, alias, query)

    def _apply_list_rule(self, collection: Collection, alias: str, query: SelectQueryLike) -> None:
        rule = collection.listRule
        if self.allow_hidden_fields or not rule:
            return
        clone = RecordFieldResolver(
            self.schema,
            collection,
            self.request_info,
            True,
            names=self._names,
            base_alias=alias,
            alias_suffix=self._names.alias("_"),
        )
        # `id=''` keeps rows whose relation is empty (the joined side is all NULL)
        expr = build_filter("id='' || (\n" + rule + "\n)", clone)
        query.and_where(expr)
        if clone.joins:
            query.distinct = True
            for join in clone.joins:
                query.left_join(join)


def _stringify(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS, default=str).decode()
    except TypeError:
        return go_string(value)


# ---------------------------------------------------------------------- entry points
def superuser_only_violation(filter: str = "", sort: str = "") -> str | None:
    """PocketBase's 403 message if `filter`/`sort` mention `@collection.` or `@request.`
    (only superusers may), else None. Call it for non-superusers before building."""
    for value in (filter, sort):
        for prefix in SUPERUSER_ONLY_PREFIXES:
            if value and prefix in value:
                return f"Only superusers can filter by {prefix}"
    return None


def build_records_query(
    collection: Collection,
    schema: CollectionLookup,
    request_info: RequestInfo | None,
    *,
    rule: str | None = None,
    filter: str = "",
    sort: str = "",
    superuser: bool = False,
    filter_max_length: int | None = MAX_FILTER_LENGTH,
) -> SelectQuery:
    """The list/search query of `collection`: rule (skipped for superusers) AND filter, sort.

    Raises `FilterError` for a malformed rule, filter or sort, an unknown or hidden field, a
    join to a superuser-only collection from a non-superuser's filter, or limits exceeded.
    """
    resolver = RecordFieldResolver(schema, collection, request_info, True)
    query = SelectQuery(collection.name)
    if not superuser and rule:
        query.and_where(build_filter(rule, resolver))
    resolver.allow_hidden_fields = superuser
    if filter:
        query.and_where(build_filter(filter, resolver, max_length=filter_max_length))
    for term in build_sort(sort, resolver, collection.name):
        query.and_order_by(term)
    resolver.update_query(query)
    return query


def build_record_query(
    collection: Collection,
    schema: CollectionLookup,
    request_info: RequestInfo | None,
    record_id: str,
    *,
    rule: str | None = None,
    superuser: bool = False,
) -> SelectQuery:
    """The query selecting record `record_id` only if it satisfies `rule` (view, update,
    delete, and the create check run inside the create transaction)."""
    resolver = RecordFieldResolver(schema, collection, request_info, True)
    query = SelectQuery(collection.name)
    name = resolver.names.param("id")
    query.and_where(Expr(f"{quote_column(collection.name + '.id')} = :{name}", {name: record_id}))
    if not superuser and rule:
        query.and_where(build_filter(rule, resolver))
    resolver.update_query(query)
    return query
