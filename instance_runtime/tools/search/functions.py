"""Filter functions: `geoDistance(lonA, latA, lonB, latB)` and `strftime(format, [time, mods...])`.

A function receives its argument tokens and a callback that resolves one token like an
operand (so arguments may be fields, numbers, texts or macros, as each function allows) and
returns a `ResolverResult`. Unknown functions and bad arguments raise `FilterError`.

- `geoDistance`: the Haversine distance in km between two points; each argument is an
  identifier or a number (not a text); no "match-all" constraint is added for multi-valued
  arguments (any matching related record satisfies the comparison), as in PocketBase.
- `strftime`: SQLite's `strftime`, first argument a format text, then an optional time value
  (text, number or identifier) and up to 8 modifier texts; a multi-valued time value keeps
  its multi-match constraint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from instance_runtime.tools.search.errors import FilterError
from instance_runtime.tools.search.lexer import Token, TokenType
from instance_runtime.tools.search.resolver import (
    Names,
    NullFallback,
    ResolverResult,
    merge_params,
)

TokenResolver = Callable[[Token], ResolverResult]
TokenFunction = Callable[[TokenResolver, tuple[Token, ...], Names], ResolverResult]


def geo_distance(resolve: TokenResolver, args: tuple[Token, ...], names: Names) -> ResolverResult:
    """`geoDistance(lonA, latA, lonB, latB)` in kilometres."""
    if len(args) != 4:
        raise FilterError(f"[geoDistance] expected 4 arguments, got {len(args)}")
    resolved: list[ResolverResult] = []
    for i, arg in enumerate(args):
        if arg.type not in (TokenType.IDENTIFIER, TokenType.NUMBER):
            raise FilterError(f"[geoDistance] argument {i} must be an identifier or number")
        try:
            resolved.append(resolve(arg))
        except FilterError as err:
            raise FilterError(f"[geoDistance] failed to resolve argument {i}: {err}") from err
    lon_a, lat_a, lon_b, lat_b = (r.identifier for r in resolved)
    sql = (
        f"(6371 * acos(cos(radians({lat_a})) * cos(radians({lat_b})) * "
        f"cos(radians({lon_b}) - radians({lon_a})) + "
        f"sin(radians({lat_a})) * sin(radians({lat_b}))))"
    )
    return ResolverResult(
        sql,
        merge_params(*(r.params for r in resolved)),
        null_fallback=NullFallback.DISABLED,
    )


def strftime(resolve: TokenResolver, args: tuple[Token, ...], names: Names) -> ResolverResult:
    """`strftime(format, [timeValue, modifier...])` with NULL results treated as ''."""
    total = len(args)
    if total < 1:
        raise FilterError(f"[strftime] expected at least 1 arguments, got {total}")
    if total > 10:
        raise FilterError(f"[strftime] too many arguments (max allowed 10, got {total})")
    if args[0].type is not TokenType.TEXT:
        raise FilterError("[strftime] expects the first argument to be a format string")
    fmt = resolve(args[0])
    if total == 1:
        return ResolverResult(
            f"strftime({fmt.identifier})", fmt.params, null_fallback=NullFallback.ENFORCED
        )
    if args[1].type not in (TokenType.TEXT, TokenType.IDENTIFIER, TokenType.NUMBER):
        raise FilterError("[strftime] expects the second argument to be of a valid time-value type")
    try:
        time_value = resolve(args[1])
    except FilterError as err:
        raise FilterError(f"[strftime] failed to resolve time-value argument: {err}") from err
    modifiers: list[ResolverResult] = []
    for i, arg in enumerate(args[2:]):
        if arg.type is not TokenType.TEXT:
            raise FilterError(f"[strftime] invalid modifier argument {i} - can be only string")
        modifiers.append(resolve(arg))

    identifiers = [fmt.identifier, time_value.identifier, *(m.identifier for m in modifiers)]
    params = merge_params(fmt.params, time_value.params, *(m.params for m in modifiers))
    result = ResolverResult(
        "strftime(" + ",".join(identifiers) + ")", params, null_fallback=NullFallback.ENFORCED
    )
    if time_value.multi_match is not None:
        mm = time_value.multi_match
        identifiers[1] = mm.value_identifier
        result.multi_match = dataclasses.replace(
            mm,
            value_identifier="strftime(" + ",".join(identifiers) + ")",
            joins=list(mm.joins),
            params=merge_params(mm.params, params),
        )
    return result


TOKEN_FUNCTIONS: dict[str, TokenFunction] = {
    "geoDistance": geo_distance,
    "strftime": strftime,
}
