"""A small SELECT builder for searches: base table, LEFT JOINs, WHERE parts, ORDER BY, paging.

Contract: `build()` and `build_count()` return an `Expr` (SQL with `:name` placeholders and
their values) ready for `sqlite3` (`conn.execute(expr.sql, expr.params)`); every WHERE part is
ANDed, each in parentheses. Joins whose alias was already added are replaced, not repeated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.search.resolver import Expr, Join


@dataclass
class SelectQuery:
    """`SELECT [DISTINCT] <table>.* FROM <table> ...` over one collection table (or view)."""

    table: str
    distinct: bool = False
    joins: list[Join] = field(default_factory=list)
    wheres: list[Expr] = field(default_factory=list)
    order_by: list[str] = field(default_factory=list)

    def left_join(self, join: Join) -> None:
        """Add `join`, replacing an earlier join with the same alias."""
        for i, existing in enumerate(self.joins):
            if existing.alias == join.alias:
                self.joins[i] = join
                return
        self.joins.append(join)

    def and_where(self, expr: Expr) -> None:
        """AND `expr` to the WHERE clause."""
        self.wheres.append(expr)

    def and_order_by(self, sql: str) -> None:
        """Append an ORDER BY term (SQL from `sort.build_sort`)."""
        self.order_by.append(sql)

    def where(self) -> Expr | None:
        """The combined WHERE condition, or None when there is none."""
        if not self.wheres:
            return None
        params: dict[str, Any] = {}
        for w in self.wheres:
            params.update(w.params)
        if len(self.wheres) == 1:
            return Expr(self.wheres[0].sql, params)
        return Expr(" AND ".join(f"({w.sql})" for w in self.wheres), params)

    def _from(self) -> Expr:
        params: dict[str, Any] = {}
        parts = [f"FROM {quote(self.table)}"]
        for join in self.joins:
            built = join.build()
            parts.append(built.sql)
            params.update(built.params)
        where = self.where()
        if where is not None:
            parts.append(f"WHERE {where.sql}")
            params.update(where.params)
        return Expr(" ".join(parts), params)

    def build(
        self, columns: str | None = None, *, limit: int | None = None, offset: int | None = None
    ) -> Expr:
        """The SELECT statement; `columns` defaults to `"<table>".*`."""
        body = self._from()
        params = dict(body.params)
        cols = columns if columns is not None else f"{quote(self.table)}.*"
        sql = f"SELECT {'DISTINCT ' if self.distinct else ''}{cols} {body.sql}"
        if self.order_by:
            sql += " ORDER BY " + ", ".join(self.order_by)
        if limit is not None:
            sql += " LIMIT :__limit"
            params["__limit"] = int(limit)
            if offset:
                sql += " OFFSET :__offset"
                params["__offset"] = int(offset)
        return Expr(sql, params)

    def build_count(self, column: str = "id") -> Expr:
        """`SELECT COUNT(DISTINCT <table>.<column>) ...` (no ORDER BY, no paging).

        Use `_rowid_` for tables and `id` for views, as PocketBase does.
        """
        body = self._from()
        sql = f"SELECT COUNT(DISTINCT {quote(self.table)}.{quote(column)}) {body.sql}"
        return Expr(sql, dict(body.params))
