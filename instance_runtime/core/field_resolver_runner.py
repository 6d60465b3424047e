"""Resolution of one filter identifier against the collections (used by `field_resolver`).

`resolve_path(resolver, name)` follows PocketBase 0.40's `record_field_resolver_runner.go`:
plain fields, relation paths (joins; at most 6 relations deep; a multiple relation adds a
multi-match subquery), back-relations `COLLECTION_via_FIELD` (multi-match unless the field is
single with a single-column unique index), JSON paths, the modifiers `:each`, `:length`,
`:lower` (`:isset`, `:changed` are for `@request.body.*`), `@collection.NAME[:alias].path`,
`@request.auth.path` (a join on the auth record; `id`, `collectionId`, `collectionName`,
`email`, `emailVisibility`, `verified` are plain values) and `@request.body.REL.path`.
Missing `@request.*` values resolve to NULL; unknown fields elsewhere raise `FilterError`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from instance_runtime.core.models import Collection, Field
from instance_runtime.tools.dbutils import parse_index, quote
from instance_runtime.tools.search import (
    Expr,
    FilterError,
    Join,
    MultiMatchSubquery,
    NullFallback,
    ResolverResult,
    build_filter,
    merge_params,
    quote_column,
)
from instance_runtime.tools.search.compiler import go_string
from instance_runtime.tools.search.errors import q
from instance_runtime.tools.search.simple import columnify, is_array_index, json_path
from instance_runtime.tools.search.sqlfn import json_array_length, json_each, json_extract

if TYPE_CHECKING:
    from instance_runtime.core.field_resolver import RecordFieldResolver

MAX_NESTED_RELATIONS = 6
MODIFIERS = frozenset({"each", "isset", "length", "lower", "changed"})
MULTI_VALUER_TYPES = frozenset({"select", "relation", "file"})
PLAIN_AUTH_FIELDS = frozenset(
    "@request.auth." + f
    for f in ("id", "collectionId", "collectionName", "email", "emailVisibility", "verified")
)
_VIA = re.compile(r"(\w+)_via_(\w+)", re.ASCII)
MISSING = object()  # extract_nested's "no such key"


def split_modifier(combined: str) -> tuple[str, str]:
    """`name:modifier` -> (name, modifier); no or several `:` -> (combined, "")."""
    parts = combined.split(":")
    if len(parts) != 2:
        return combined, ""
    if parts[1] in MODIFIERS:
        return parts[0], parts[1]
    raise FilterError(f"unknown modifier in {q(combined)}")


def extract_nested(data: Any, keys: list[str]) -> Any:
    """The value at `keys` inside nested dicts/lists, or `MISSING`."""
    current = data
    for key in keys:
        if isinstance(current, dict):
            if key not in current:
                return MISSING
            current = current[key]
        elif isinstance(current, list | tuple):
            if not is_array_index(key) or int(key) >= len(current):
                return MISSING
            current = current[int(key)]
        else:
            return MISSING
    return current


def to_slice(value: Any) -> list[Any]:
    """None -> [], a list/tuple -> its items, anything else -> [value]."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return list(value)
    return [value]


def unique_strings(value: Any) -> list[str]:
    """Relation ids from a body value (PocketBase's `list.ToUniqueStringSlice`)."""
    items: list[Any]
    if value is None:
        items = []
    elif isinstance(value, str):
        items = [value]
        if "[" in value:
            try:
                decoded = orjson.loads(value)
            except orjson.JSONDecodeError:
                decoded = None
            if isinstance(decoded, list) and all(isinstance(v, str) for v in decoded):
                items = decoded
    elif isinstance(value, list | tuple):
        items = [v if isinstance(v, str) else go_string(v) for v in value if v is not None]
    else:
        items = []
    out: list[str] = []
    for item in items:
        text = str(item)
        if text and text not in out:
            out.append(text)
    return out


def in_expr(column: str, values: list[str], names_param: Callable[[], str]) -> Expr:
    """`col = :p` for one value, `col IN (:p1, :p2, ...)` for several."""
    params = {names_param(): v for v in values}
    placeholders = [f":{k}" for k in params]
    if len(placeholders) == 1:
        return Expr(f"{quote_column(column)} = {placeholders[0]}", params)
    return Expr(f"{quote_column(column)} IN ({', '.join(placeholders)})", params)


def _eq(left: str, right: str) -> Expr:
    """`"a"."b" = "c"."d"` for two validated `table.column` paths."""
    return Expr(f"{quote_column(left)} = {quote_column(right)}")


def has_unique_index(collection: Collection, column: str) -> bool:
    for raw in collection.indexes:
        index = parse_index(raw)
        if (
            index.unique
            and len(index.columns) == 1
            and index.columns[0].name.lower() == column.lower()
        ):
            return True
    return False


class _Runner:
    """State of one `resolve` call (aliases of the main query and of the multi-match one)."""

    def __init__(self, resolver: RecordFieldResolver, name: str) -> None:
        self.r = resolver
        self.name = name
        self.props = name.split(".")
        base = resolver.base_collection
        self.collection_name = base.name
        self.alias = resolver.base_alias or columnify(base.name)
        self.nullify_missing = self.props[0] == "@request"
        self.mm = MultiMatchSubquery(
            target_table_alias=self.alias,
            from_table_name=columnify(base.name),
            from_table_alias="__mm_" + self.alias,
        )
        self.mm_alias = self.mm.from_table_alias
        self.with_mm = False

    # ------------------------------------------------------------------ helpers
    def _param(self) -> str:
        return self.r.names.param("f")

    def _null(self) -> ResolverResult:
        return ResolverResult("NULL")

    def _missing(self, message: str) -> ResolverResult:
        if self.nullify_missing:
            return self._null()
        raise FilterError(message)

    def _load(self, name_or_id: str) -> Collection:
        collection = self.r.load_collection(name_or_id)
        if collection is None:
            raise FilterError(f"failed to load collection {q(name_or_id)}")
        return collection

    def _hidden_check(self, field: Field) -> None:
        if field.hidden and not self.r.allow_hidden_fields:
            raise FilterError(f"non-filterable field {q(field.name)}")

    # ------------------------------------------------------------------ entry
    def run(self) -> ResolverResult:
        first = self.props[0]
        if first == "@collection":
            return self._collection_field()
        if first == "@request":
            info = self.r.request_info
            if info is None:
                return self._null()
            if self.name.startswith("@request.auth."):
                return self._auth_field()
            if self.name.startswith("@request.body.") and len(self.props) > 2:
                field_name, modifier = split_modifier(self.props[2])
                body_field = self.r.base_collection.field(field_name)
                if body_field is not None:
                    if body_field.type == "relation" and len(self.props) > 3:
                        return self._body_relation_field(body_field)
                    if len(self.props) == 3 and modifier:
                        special = self._body_modifier(body_field, modifier)
                        if special is not None:
                            return special
            return self.r.resolve_static(self.props[1:])
        return self._active_props()

    def _collection_field(self) -> ResolverResult:
        if len(self.props) < 3:
            raise FilterError(f"invalid @collection field path in {q(self.name)}")
        name, _, alias = self.props[1].partition(":")
        collection = self.r.load_collection(name)
        if collection is None:
            raise FilterError(
                f"failed to load collection {q(self.props[1])} from field path {q(self.name)}"
            )
        self.collection_name = collection.name
        prefix = f"__collection_alias_{alias}" if alias else f"__collection_{collection.name}"
        self.alias = columnify(prefix) + self.r.alias_suffix
        self.with_mm = True
        table = quote(columnify(collection.name))
        self.r.register_join(Join(table, self.alias), collection)
        self.mm_alias = "__mm_" + self.alias
        self.mm.joins.append(Join(table, self.mm_alias))
        self.props = self.props[2:]
        return self._active_props()

    def _auth_field(self) -> ResolverResult:
        info = self.r.request_info
        auth = info.auth if info is not None else None
        if info is None or not auth:
            return self._null()
        collection = info.auth_collection or self.r.load_collection(
            str(auth.get("collectionId") or auth.get("collectionName") or "")
        )
        if collection is None:
            return self._null()
        if self.name in PLAIN_AUTH_FIELDS:
            return self.r.resolve_static(self.props[1:])
        self.collection_name = collection.name
        self.alias = "__auth_" + columnify(collection.name) + self.r.alias_suffix
        table = quote(columnify(collection.name))
        auth_id = str(auth.get("id") or "")
        on = in_expr(self.alias + ".id", [auth_id], self._param)
        self.r.register_join(Join(table, self.alias, on), collection)
        self.mm_alias = "__mm_" + self.alias
        mm_on = in_expr(self.mm_alias + ".id", [auth_id], self._param)
        self.mm.joins.append(Join(table, self.mm_alias, mm_on))
        self.props = self.props[2:]
        return self._active_props()

    def _body_modifier(self, field: Field, modifier: str) -> ResolverResult | None:
        body = self.r.request_info.body if self.r.request_info else {}
        multi_valuer = field.type in MULTI_VALUER_TYPES
        if modifier in ("each", "length") and not multi_valuer:
            raise FilterError(f"field {q(field.name)} doesn't support multivalue operations")
        if modifier == "length":
            return ResolverResult(str(len(to_slice(body.get(field.name)))))
        if modifier == "lower":
            raw = body.get(field.name)
            value = go_string(raw) if not isinstance(raw, dict | list | tuple) else ""
            name = self._param()
            return ResolverResult(f"LOWER(:{name})", {name: value})
        if modifier == "changed":
            return self._body_changed(field)
        if modifier == "each":
            return self._body_each(field, body.get(field.name))
        return None

    def _body_changed(self, field: Field) -> ResolverResult:
        n = field.name
        alias_expr = build_filter(
            f"@request.body.{n}:isset = true && @request.body.{n} != {n}", self.r
        )
        placeholder = f"@changed@{n}@{self.r.names.alias('')}@"

        def replace(expr: Expr) -> Expr:
            sql = expr.sql.replace(placeholder, alias_expr.sql)
            return Expr(sql, merge_params(expr.params, alias_expr.params))

        return ResolverResult(placeholder, null_fallback=NullFallback.DISABLED, after_build=replace)

    def _body_each(self, field: Field, value: Any) -> ResolverResult:
        raw = orjson.dumps(to_slice(value), default=str).decode()
        param = self.r.names.param("dataEach")
        je_alias = "__dataEach_je_" + columnify(field.name) + self.r.alias_suffix
        self.r.register_join(Join(f"json_each(:{param})", je_alias, table_params={param: raw}))
        result = ResolverResult(quote_column(je_alias + ".value"), {param: raw})
        if field.is_multiple:
            self.with_mm = True
        if self.with_mm:
            param2 = "mm" + param
            je_alias2 = "__mm_" + je_alias
            join = Join(f"json_each(:{param2})", je_alias2, table_params={param2: raw})
            self.mm.joins.append(join)
            self.mm.params[param2] = raw
            self.mm.value_identifier = quote_column(je_alias2 + ".value")
            result.multi_match = self.mm
        return result

    def _body_relation_field(self, field: Field) -> ResolverResult:
        collection = self.r.load_collection(field.collection_id)
        if collection is None:
            target, name = q(field.collection_id), q(field.name)
            raise FilterError(f"failed to load collection {target} from data field {name}")
        body = self.r.request_info.body if self.r.request_info else {}
        ids = unique_strings(body.get(field.name))
        if not ids:
            return self._null()
        self.collection_name = collection.name
        self.alias = columnify(f"__data_{collection.name}_{field.name}") + self.r.alias_suffix
        table = quote(columnify(collection.name))
        on = in_expr(self.alias + ".id", ids, self._param)
        self.r.register_join(Join(table, self.alias, on), collection)
        if field.is_multiple:
            self.with_mm = True
        self.mm_alias = "__mm_" + self.alias
        self.mm.joins.append(
            Join(table, self.mm_alias, in_expr(self.mm_alias + ".id", ids, self._param))
        )
        self.props = self.props[3:]
        return self._active_props()

    # ------------------------------------------------------------------ field paths
    def _active_props(self) -> ResolverResult:
        total = len(self.props)
        for i, prop in enumerate(self.props):
            collection = self.r.load_collection(self.collection_name)
            if collection is None:
                raise FilterError(f"failed to resolve field {q(prop)}")
            if i == total - 1:
                return self._finalize(collection, prop)
            field = collection.field(prop)
            if field is not None:
                self._hidden_check(field)
                if field.type in ("json", "geoPoint"):
                    return self._json_path(field, self.props[i + 1 :])
            if i >= MAX_NESTED_RELATIONS:
                raise FilterError(f"max nested relations reached for field {q(prop)}")
            if field is None:
                back = self._back_relation(collection, prop)
                if back is not None:
                    return back
                continue
            if field.type != "relation":
                raise FilterError(f"field {q(prop)} is not a valid relation")
            related = self.r.load_collection(field.collection_id)
            if related is None:
                raise FilterError(f"failed to load field {q(prop)} collection")
            if not field.is_multiple and i == total - 2 and self.props[i + 1] == "id":
                return self._finalize(collection, field.name)
            self._join_relation(field, related)
        raise FilterError(f"failed to resolve field {q(self.name)}")

    def _json_path(self, field: Field, rest: list[str]) -> ResolverResult:
        path = json_path(rest)
        column = columnify(field.name)
        result = ResolverResult(
            json_extract(f"{self.alias}.{column}", path), null_fallback=NullFallback.DISABLED
        )
        if self.with_mm:
            self.mm.value_identifier = json_extract(f"{self.mm_alias}.{column}", path)
            result.multi_match = self.mm
        return result

    def _back_relation(self, collection: Collection, prop: str) -> ResolverResult | None:
        """Join `COLLECTION_via_FIELD`; a result (NULL) only when the path cannot resolve."""
        match = _VIA.fullmatch(prop)
        if match is None:
            return self._missing(f"failed to resolve field {q(prop)}")
        back_collection = self.r.load_collection(match.group(1))
        if back_collection is None:
            return self._missing(f"failed to load back relation field {q(prop)} collection")
        back_field = back_collection.field(match.group(2))
        if back_field is None:
            return self._missing(f"missing back relation field {q(match.group(2))}")
        if back_field.type != "relation":
            return self._missing(f"invalid back relation field {q(match.group(2))}")
        if back_field.hidden and not self.r.allow_hidden_fields:
            raise FilterError(f"non-filterable back relation field {q(back_field.name)}")
        if back_field.collection_id != collection.id:
            return self._missing(
                f"invalid collection reference of a back relation field {q(back_field.name)}"
            )

        clean_prop = columnify(prop)
        back_column = columnify(back_field.name)
        table_name = columnify(back_collection.name)
        table = quote(table_name)
        multiple = back_field.is_multiple

        def on_expr(new: str, current: str) -> Expr:
            if not multiple:
                return Expr(
                    f"{quote_column(new + '.' + back_column)} = {quote_column(current + '.id')}"
                )
            je = "__je_" + new
            return Expr(
                f"{quote_column(current + '.id')} IN (SELECT {quote_column(je + '.value')}"
                f" FROM {json_each(new + '.' + back_column)} {quote(je)})"
            )

        new_alias = f"{self.alias}_{clean_prop}{self.r.alias_suffix}"
        self.r.register_join(
            Join(table, new_alias, on_expr(new_alias, self.alias)), back_collection
        )
        self.collection_name = table_name
        self.alias = new_alias
        if multiple:
            self.with_mm = True
        elif not self.with_mm:
            self.with_mm = not has_unique_index(back_collection, back_field.name)
        new_alias2 = f"{self.mm_alias}_{clean_prop}{self.r.alias_suffix}"
        self.mm.joins.append(Join(table, new_alias2, on_expr(new_alias2, self.mm_alias)))
        self.mm_alias = new_alias2
        return None

    def _join_relation(self, field: Field, related: Collection) -> None:
        column = columnify(field.name)
        table = quote(columnify(related.name))
        new_alias = f"{self.alias}_{column}{self.r.alias_suffix}"
        if not field.is_multiple:
            on = Expr(
                f"{quote_column(new_alias + '.id')} = {quote_column(self.alias + '.' + column)}"
            )
            self.r.register_join(Join(table, new_alias, on), related)
        else:
            je = "__je_" + new_alias
            self.r.register_join(Join(json_each(f"{self.alias}.{column}"), je))
            on = Expr(f"{quote_column(new_alias + '.id')} = {quote_column(je + '.value')}")
            self.r.register_join(Join(table, new_alias, on), related)
            self.with_mm = True
        self.collection_name = related.name
        self.alias = new_alias

        new_alias2 = f"{self.mm_alias}_{column}"
        if not field.is_multiple:
            on2 = Expr(
                f"{quote_column(new_alias2 + '.id')} = {quote_column(self.mm_alias + '.' + column)}"
            )
            self.mm.joins.append(Join(table, new_alias2, on2))
        else:
            je2 = f"{self.mm_alias}_{column}_je"
            self.mm.joins.append(Join(json_each(f"{self.mm_alias}.{column}"), je2))
            on2 = Expr(f"{quote_column(new_alias2 + '.id')} = {quote_column(je2 + '.value')}")
            self.mm.joins.append(Join(table, new_alias2, on2))
        self.mm_alias = new_alias2

    def _finalize(self, collection: Collection, prop: str) -> ResolverResult:
        name, modifier = split_modifier(prop)
        field = collection.field(name)
        if field is None:
            return self._missing(f"unknown field {q(name)}")
        self._hidden_check(field)
        multi_valuer = field.type in MULTI_VALUER_TYPES
        column = columnify(field.name)
        main_col = f"{self.alias}.{column}"
        mm_col = f"{self.mm_alias}.{column}"

        if modifier == "length" and multi_valuer:
            result = ResolverResult(json_array_length(main_col))
            if self.with_mm:
                self.mm.value_identifier = json_array_length(mm_col)
                result.multi_match = self.mm
            return result

        if modifier == "each" and multi_valuer:
            je_alias = f"__je_{self.alias}_{column}{self.r.alias_suffix}"
            self.r.register_join(Join(json_each(main_col), je_alias))
            result = ResolverResult(quote_column(je_alias + ".value"))
            if field.is_multiple:
                self.with_mm = True
            if self.with_mm:
                je_alias2 = f"__je_{self.mm_alias}_{column}{self.r.alias_suffix}"
                self.mm.joins.append(Join(json_each(mm_col), je_alias2))
                self.mm.value_identifier = quote_column(je_alias2 + ".value")
                result.multi_match = self.mm
            return result

        result = ResolverResult(quote_column(main_col))
        if self.with_mm:
            self.mm.value_identifier = quote_column(mm_col)
            result.multi_match = self.mm
        if field.name == "email" and not self.r.allow_hidden_fields and collection.is_auth:
            visibility = quote_column(f"{self.alias}.emailVisibility")

            def only_visible(expr: Expr) -> Expr:
                return Expr(f"(({expr.sql}) AND ({visibility} = TRUE))", expr.params)

            result.after_build = only_visible
        if field.type == "json":
            result.null_fallback = NullFallback.DISABLED
            result.identifier = json_extract(main_col, "")
            if self.with_mm:
                self.mm.value_identifier = json_extract(mm_col, "")
        if modifier == "lower":
            result.identifier = f"LOWER({result.identifier})"
            if self.with_mm:
                self.mm.value_identifier = f"LOWER({self.mm.value_identifier})"
        return result


def resolve_path(resolver: RecordFieldResolver, name: str) -> ResolverResult:
    """Resolve one identifier (already checked against the allowed patterns)."""
    result = _Runner(resolver, name).run()
    if result.multi_match is not None:
        result.multi_match = dataclasses.replace(
            result.multi_match,
            joins=list(result.multi_match.joins),
            params=dict(result.multi_match.params),
        )
    return result
