"""The filter compiler: a parsed filter -> one parameterised SQL `WHERE` fragment.

Semantics (PocketBase 0.40's `search.FilterData.BuildExpr`):

- texts and numbers become parameters (numbers as floats); `true`/`false`/`null` (any case)
  become `1`/`0`/`NULL` unless a field of that name exists; `@now`-style macros become
  parameters; every other identifier goes to the `FieldResolver`.
- `=` / `!=` treat NULL and '' alike: `a = ''` -> `(a = '' OR a IS NULL)`, `a != b` ->
  `COALESCE(a, '') IS NOT COALESCE(b, '')`, a known non-empty operand compares directly, and
  operands the resolver marks `NullFallback.DISABLED` (JSON) compare with `IS` / `IS NOT`.
- `~` / `!~` are `LIKE` / `NOT LIKE` with `ESCAPE '\\'`: a right operand that is a value is
  wrapped in `%...%` (its `\\ % _` escaped) unless it already holds an unescaped `%`; a right
  operand that is a column is matched as `'%' || col || '%'`.
- `< <= > >=` compare as SQLite does.
- an operand that stands for several values (resolver's `MultiMatchSubquery`) must satisfy the
  condition for all of them with the plain operators (an extra `NOT EXISTS` over the values
  that fail), and for at least one with the `?` operators.
- items are joined with `AND` / `OR` in order (SQL precedence), groups in parentheses.

Contract: `build_filter(text, resolver)` returns an `Expr` whose SQL contains no value from
`text` (only placeholders, SQL keywords, and identifiers produced by the resolver) or raises
`FilterError`; it never raises anything else for any `text`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from instance_runtime.tools.search.errors import FilterError, q
from instance_runtime.tools.search.functions import TOKEN_FUNCTIONS
from instance_runtime.tools.search.lexer import Token, TokenType
from instance_runtime.tools.search.macros import macro_value
from instance_runtime.tools.search.parser import Comparison, Group, parse
from instance_runtime.tools.search.resolver import (
    Expr,
    FieldResolver,
    MultiMatchSubquery,
    Names,
    NullFallback,
    ResolverResult,
    merge_params,
    quote_column,
)

DEFAULT_MAX_EXPRESSIONS = 200  # comparisons per filter
MAX_FILTER_LENGTH = 3500  # characters of a client-side filter (the records API applies it)

ANY_OPERATORS = frozenset({"?=", "?!=", "?~", "?!~", "?<", "?<=", "?>", "?>="})
_NORMALIZED_IDENTIFIERS = {"null": "NULL", "true": "1", "false": "0"}
_LIKE_ESCAPE = "ESCAPE '\\'"


class _Context:
    def __init__(self, resolver: FieldResolver, now: datetime | None, max_expressions: int):
        self.resolver = resolver
        self.names = resolver.names
        self.now = now
        self.remaining = max_expressions


def build_filter(
    text: str,
    resolver: FieldResolver,
    *,
    max_expressions: int = DEFAULT_MAX_EXPRESSIONS,
    max_length: int | None = None,
    placeholders: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Expr:
    """Compile the filter `text` with `resolver` into a WHERE fragment (see the module doc).

    `placeholders` replaces `{:name}` occurrences in `text` by the quoted value first (as
    PocketBase's `FilterData.BuildExpr(resolver, params)`; for server-side code, not for
    client input). `max_length` (characters) is checked before parsing; `max_expressions`
    bounds the number of comparisons. `now` fixes the time of the date macros.
    """
    if max_length is not None and len(text) > max_length:
        raise FilterError("max filter length limit reached")
    if placeholders:
        text = replace_placeholders(text, placeholders)
    groups = parse(text)
    ctx = _Context(resolver, now, max_expressions)
    try:
        return _build_groups(groups, ctx)
    except RecursionError as err:
        raise FilterError("filter expression nested too deeply") from err


def replace_placeholders(text: str, values: Mapping[str, Any]) -> str:
    """`text` with every `{:name}` replaced by its value written as a filter literal."""
    for key, value in values.items():
        if value is None:
            literal = "null"
        elif isinstance(value, bool):
            literal = "true" if value else "false"
        elif isinstance(value, int | float):
            literal = go_string(value)
        else:
            raw = value if isinstance(value, str) else orjson.dumps(value).decode()
            escaped = (
                raw.replace("\\", "\\\\")
                .replace('"', '\\"')
                .replace("\n", "\\n")
                .replace("\r", "\\r")
                .replace("\t", "\\t")
            )
            literal = f'"{escaped}"'
        text = text.replace("{:" + key + "}", literal)
    return text


def go_string(value: Any) -> str:
    """`value` as Go's `cast.ToString` writes it (floats without exponent, e.g. 5.0 -> "5")."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        text = format(Decimal(repr(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# ---------------------------------------------------------------------- groups and tokens
def _build_groups(groups: tuple[Group, ...], ctx: _Context) -> Expr:
    if not groups:
        raise FilterError("empty filter expression")
    parts: list[str] = []
    params: dict[str, Any] = {}
    for group in groups:
        if isinstance(group.item, Comparison):
            if ctx.remaining <= 0:
                raise FilterError("max filter expressions limit reached")
            ctx.remaining -= 1
            expr = _build_comparison_item(group.item, ctx)
        else:
            expr = _build_groups(group.item, ctx)
        if parts:
            parts.append("OR" if group.join == "||" else "AND")
        parts.append(expr.sql)
        params.update(expr.params)
    if len(parts) == 1:
        upper = parts[0].upper()
        if " AND " not in upper and " OR " not in upper:
            return Expr(parts[0], params)
    return Expr("(" + " ".join(parts) + ")", params)


def _build_comparison_item(item: Comparison, ctx: _Context) -> Expr:
    try:
        left = resolve_token(item.left, ctx)
    except FilterError as err:
        raise FilterError(f"invalid left operand {q(item.left.literal)} - {err}") from err
    try:
        right = resolve_token(item.right, ctx)
    except FilterError as err:
        raise FilterError(f"invalid right operand {q(item.right.literal)} - {err}") from err
    return build_comparison(left, item.op, right, ctx.names)


def resolve_token(token: Token, ctx: _Context) -> ResolverResult:
    """One operand token -> SQL (parameters for values, the resolver for identifiers)."""
    names = ctx.names
    if token.type is TokenType.IDENTIFIER:
        macro = macro_value(token.literal, ctx.now)
        if macro is not None:
            name = names.param("t")
            return ResolverResult(f":{name}", {name: macro})
        try:
            result = ctx.resolver.resolve(token.literal)
        except FilterError:
            normalized = _NORMALIZED_IDENTIFIERS.get(token.literal.lower())
            if normalized is None:
                raise
            return ResolverResult(normalized)
        if not result.identifier:
            raise FilterError(f"failed to resolve field {q(token.literal)}")
        return result
    if token.type is TokenType.TEXT:
        name = names.param("t")
        return ResolverResult(f":{name}", {name: token.literal})
    if token.type is TokenType.NUMBER:
        name = names.param("t")
        number = float(token.literal)
        # Go's cast.ToFloat64 gives 0 for a literal out of float64's range
        return ResolverResult(f":{name}", {name: 0.0 if math.isinf(number) else number})
    if token.type is TokenType.FUNCTION:
        func = TOKEN_FUNCTIONS.get(token.literal)
        if func is None:
            raise FilterError(f"unknown function {q(token.literal)}")
        return func(lambda arg: resolve_token(arg, ctx), token.args, names)
    raise FilterError(f"unsupported token type {q(token.type.value)}")


# ---------------------------------------------------------------------- comparisons
def _not(expr: Expr) -> Expr:
    return Expr(f"NOT ({expr.sql})", expr.params)


def _and_enclosed(first: Expr, second: Expr) -> Expr:
    return Expr(f"(({first.sql}) AND ({second.sql}))", merge_params(first.params, second.params))


def build_comparison(left: ResolverResult, op: str, right: ResolverResult, names: Names) -> Expr:
    """`left op right` as SQL, with the multi-match constraints and `after_build` hooks."""
    base = op[1:] if op in ANY_OPERATORS else op
    if base in ("=", "!="):
        expr = _equal_expr(base == "=", left, right)
    elif base in ("~", "!~"):
        expr = _like_expr(base == "~", left, right, names)
    elif base in ("<", "<=", ">", ">="):
        params = merge_params(left.params, right.params)
        expr = Expr(f"{left.identifier} {base} {right.identifier}", params)
    else:
        raise FilterError(f"unknown expression operator {q(op)}")

    if op not in ANY_OPERATORS:
        if left.multi_match is not None and right.multi_match is not None:
            expr = _and_enclosed(expr, _many_vs_many(left, op, right, names))
        elif left.multi_match is not None:
            mm = _many_vs_one(left.multi_match, left.null_fallback, op, right, names, False)
            expr = _and_enclosed(expr, mm)
        elif right.multi_match is not None:
            mm = _many_vs_one(right.multi_match, right.null_fallback, op, left, names, True)
            expr = _and_enclosed(expr, mm)

    if left.after_build is not None:
        expr = left.after_build(expr)
    if right.after_build is not None:
        expr = right.after_build(expr)
    return expr


def _equal_expr(equal: bool, left: ResolverResult, right: ResolverResult) -> Expr:
    """`=` / `!=` with PocketBase's NULL-vs-empty normalizations."""
    params = merge_params(left.params, right.params)
    if equal:
        eq, null_eq, concat, null_expr = "=", "IS", "OR", "IS NULL"
    else:
        eq, null_eq, concat, null_expr = "IS NOT", "IS NOT", "AND", "IS NOT NULL"

    if NullFallback.DISABLED in (left.null_fallback, right.null_fallback):
        return Expr(f"{left.identifier} {null_eq} {right.identifier}", params)

    left_empty = _is_empty_identifier(left) or (
        left.null_fallback is NullFallback.AUTO and len(left.params) == 1 and _has_empty_param(left)
    )
    right_empty = _is_empty_identifier(right) or (
        right.null_fallback is NullFallback.AUTO
        and len(right.params) == 1
        and _has_empty_param(right)
    )
    if left_empty and right_empty:
        return Expr(f"'' {eq} ''", params)
    if _is_known_non_empty(left) or _is_known_non_empty(right):
        lsql = "''" if left_empty else left.identifier
        rsql = "''" if right_empty else right.identifier
        return Expr(f"{lsql} {eq} {rsql}", params)
    if left_empty:
        r = right.identifier
        return Expr(f"('' {eq} {r} {concat} {r} {null_expr})", params)
    if right_empty:
        lid = left.identifier
        return Expr(f"({lid} {eq} '' {concat} {lid} {null_expr})", params)
    return Expr(f"COALESCE({left.identifier}, '') {eq} COALESCE({right.identifier}, '')", params)


def _has_empty_param(result: ResolverResult) -> bool:
    return any(v is None or v == "" for v in result.params.values())


def _is_empty_identifier(result: ResolverResult) -> bool:
    return result.identifier.lower() in ("", "null", "''", '""', "``")


def _is_known_non_empty(result: ResolverResult) -> bool:
    if result.null_fallback is NullFallback.ENFORCED:
        return False
    if result.identifier.lower() in ("1", "0", "false", "true"):
        return True
    return bool(result.params) and not _has_empty_param(result) and not _is_empty_identifier(result)


def _like_expr(like: bool, left: ResolverResult, right: ResolverResult, names: Names) -> Expr:
    keyword = "LIKE" if like else "NOT LIKE"
    if not right.params:
        sql = f"{left.identifier} {keyword} ('%' || {right.identifier} || '%') {_LIKE_ESCAPE}"
        return Expr(sql, dict(left.params))
    identifier = right.identifier
    wrapped: dict[str, Any] = {}
    for name, value in right.params.items():
        # a fresh name: the original may also be used unwrapped elsewhere (e.g. by a join)
        new_name = names.param("l")
        identifier = re.sub(rf":{re.escape(name)}(?![A-Za-z0-9_])", f":{new_name}", identifier)
        wrapped[new_name] = wrap_like_value(go_string(value))
    sql = f"{left.identifier} {keyword} {identifier} {_LIKE_ESCAPE}"
    return Expr(sql, merge_params(left.params, wrapped))


def wrap_like_value(value: str) -> str:
    """`%value%` with `\\`, `%`, `_` escaped -- unless `value` has an unescaped `%` already."""
    if _contains_unescaped(value, "%"):
        return value
    return "%" + _escape_unescaped(value, "\\%_") + "%"


def _escape_unescaped(text: str, specials: str) -> str:
    """Prefix every special character with `\\` unless it is already preceded by one.

    Walks from the end, as the reference does: a backslash that escapes the character after
    it is kept as that escape and not escaped itself.
    """
    out: list[str] = []
    pending = False
    for i in range(len(text) - 1, -1, -1):
        ch = text[i]
        if pending:
            if ch != "\\":
                out.append("\\")
            pending = False
        else:
            pending = ch in specials
        out.append(ch)
        if i == 0 and pending:
            out.append("\\")
    return "".join(reversed(out))


def _contains_unescaped(text: str, target: str) -> bool:
    prev = ""
    for ch in text:
        if ch == target and prev != "\\":
            return True
        prev = "" if (ch == "\\" and prev == "\\") else ch
    return False


# ---------------------------------------------------------------------- multi-match
def _many_vs_many(left: ResolverResult, op: str, right: ResolverResult, names: Names) -> Expr:
    assert left.multi_match is not None and right.multi_match is not None
    l_alias = names.alias("__ml")
    r_alias = names.alias("__mr")
    where = build_comparison(
        ResolverResult(
            quote_column(l_alias + ".multiMatchValue"), null_fallback=left.null_fallback
        ),
        op,
        ResolverResult(
            quote_column(r_alias + ".multiMatchValue"),
            null_fallback=right.null_fallback,
            after_build=_not,
        ),
        names,
    )
    lsub = left.multi_match.build()
    rsub = right.multi_match.build()
    sql = (
        f"NOT EXISTS (SELECT 1 FROM ({lsub.sql}) {quote_column(l_alias)}"
        f" LEFT JOIN ({rsub.sql}) {quote_column(r_alias)} WHERE {where.sql})"
    )
    return Expr(sql, merge_params(lsub.params, rsub.params, where.params))


def _many_vs_one(
    subquery: MultiMatchSubquery,
    null_fallback: NullFallback,
    op: str,
    other: ResolverResult,
    names: Names,
    inverse: bool,
) -> Expr:
    alias = names.alias("__sm")
    many = ResolverResult(
        quote_column(alias + ".multiMatchValue"), null_fallback=null_fallback, after_build=_not
    )
    one = ResolverResult(other.identifier, dict(other.params))
    where = (
        build_comparison(one, op, many, names)
        if inverse
        else build_comparison(many, op, one, names)
    )
    sub = subquery.build()
    sql = f"NOT EXISTS (SELECT 1 FROM ({sub.sql}) {quote_column(alias)} WHERE {where.sql})"
    return Expr(sql, merge_params(sub.params, where.params))
