"""What the filter compiler needs from the outside: the `FieldResolver` seam and its results.

The compiler turns literals into parameters itself and asks a `FieldResolver` for everything
else: `resolve(name)` maps an identifier (`title`, `author.name`, `@request.auth.id`,
`tags:each`, ...) to a `ResolverResult` -- an SQL fragment built only from identifiers the
resolver validated, plus the parameters that fragment references. A resolver may register
joins while resolving; `update_query(query)` adds them (and anything else it needs) to the
final `SelectQuery`.

SQL conventions shared by every fragment (`Expr`):

- parameters are named placeholders `:name` (sqlite3's named style) whose values live in
  `Expr.params` / `ResolverResult.params`; names come from the query's shared `Names`, so they
  never collide, and no value is ever written into SQL text;
- identifiers are double-quoted (`quote_column("a.b")` -> `"a"."b"`).

A `ResolverResult` may carry a `MultiMatchSubquery`: for a value that stands for several rows
(a multi relation, `:each`, a back-relation, `@collection`), the compiler adds
`NOT EXISTS (SELECT 1 FROM (subquery) WHERE NOT (condition))` so that the default operators
mean "all of them" while the `?`-operators mean "any of them".
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from instance_runtime.tools.dbutils import quote

Params = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Expr:
    """An SQL fragment and the values of the `:name` placeholders it uses."""

    sql: str
    params: Mapping[str, Any] = field(default_factory=dict)


def merge_params(*sources: Mapping[str, Any]) -> Params:
    """The union of several parameter maps (later ones win on a shared name)."""
    out: Params = {}
    for source in sources:
        out.update(source)
    return out


class Names:
    """Unique placeholder names and table aliases for one query (shared by all its parts)."""

    def __init__(self, scope: str = "") -> None:
        """`scope` (letters, digits, `_`) is added to every name, so that the fragments of
        several independently compiled expressions can share one statement."""
        self._counter = itertools.count(1)
        self._scope = scope

    def param(self, prefix: str = "p") -> str:
        """A fresh placeholder name (without the leading `:`)."""
        return f"{prefix}{self._scope}{next(self._counter)}"

    def alias(self, prefix: str) -> str:
        """A fresh table alias starting with `prefix`."""
        return f"{prefix}{self._scope}{next(self._counter)}"


def quote_column(path: str) -> str:
    """`"table"."column"` for `table.column` (each dotted part quoted)."""
    return ".".join(quote(part) for part in path.split("."))


class NullFallback(Enum):
    """How `=`/`!=` treat NULL versus '' for an operand (PocketBase's `NullFallback*`)."""

    AUTO = 0
    DISABLED = 1  # compare as is (`IS` / `IS NOT`), e.g. JSON values
    ENFORCED = 2  # never assume the operand is non-empty (COALESCE when needed)


@dataclass(slots=True)
class Join:
    """`LEFT JOIN <table> <alias> [ON <on>]`; `table` is SQL (a quoted name or `json_each(..)`)."""

    table: str
    alias: str
    on: Expr | None = None
    table_params: Mapping[str, Any] = field(default_factory=dict)

    def build(self) -> Expr:
        sql = f"LEFT JOIN {self.table} {quote(self.alias)}"
        params = merge_params(self.table_params)
        if self.on is not None:
            sql += f" ON {self.on.sql}"
            params.update(self.on.params)
        return Expr(sql, params)


@dataclass(slots=True)
class MultiMatchSubquery:
    """A subquery listing every value an operand stands for, for one row of the main table.

    Built as `SELECT <value_identifier> AS "multiMatchValue" FROM <from_table> <from_alias>
    <joins> WHERE <from_alias>.id = <target_alias>.id`.
    """

    target_table_alias: str
    from_table_name: str
    from_table_alias: str
    value_identifier: str = ""
    joins: list[Join] = field(default_factory=list)
    params: Params = field(default_factory=dict)

    def build(self) -> Expr:
        if not (self.target_table_alias and self.from_table_name and self.from_table_alias):
            return Expr("0=1")
        params = dict(self.params)
        joins = []
        for join in self.joins:
            built = join.build()
            joins.append(built.sql)
            params.update(built.params)
        sql = (
            f"SELECT {self.value_identifier} AS {quote('multiMatchValue')}"
            f" FROM {quote(self.from_table_name)} {quote(self.from_table_alias)}"
            f"{' ' + ' '.join(joins) if joins else ''}"
            f" WHERE {quote_column(self.from_table_alias + '.id')}"
            f" = {quote_column(self.target_table_alias + '.id')}"
        )
        return Expr(sql, params)


@dataclass(slots=True)
class ResolverResult:
    """One resolved operand.

    `identifier` is the SQL of the operand (a quoted column, `NULL`, `:placeholder`, an SQL
    expression); `params` the values of the placeholders it uses. `after_build`, when set, wraps
    the whole comparison the operand took part in (e.g. to add `AND emailVisibility = TRUE`).
    """

    identifier: str
    params: Params = field(default_factory=dict)
    null_fallback: NullFallback = NullFallback.AUTO
    multi_match: MultiMatchSubquery | None = None
    after_build: Callable[[Expr], Expr] | None = None


class SelectQueryLike(Protocol):
    """The part of `query.SelectQuery` a resolver may change in `update_query`."""

    distinct: bool

    def left_join(self, join: Join) -> None: ...

    def and_where(self, expr: Expr) -> None: ...


class FieldResolver(Protocol):
    """Maps identifiers to SQL for the compiler (see the module docstring).

    `names` is the query-wide name source the compiler also uses for its placeholders.
    `resolve` raises `FilterError` for anything it does not accept (unknown field, hidden
    field, bad modifier, ...). `update_query` is called once, after every filter and sort of
    the query was compiled with this resolver, and may raise `FilterError`.
    """

    @property
    def names(self) -> Names: ...

    def resolve(self, field: str) -> ResolverResult: ...

    def update_query(self, query: SelectQueryLike) -> None: ...
