"""Searches over the app's log (PocketBase's `core/log_query.go` and the logs search provider),
each run on a read connection of `core.logs`.

Contract:

- filters and sorts may name `id`, `created`, `level`, `message`, `data` and any `data.PATH`
  (`data.status`, `data.auth`: JSON members), in the records' filter language
  (`tools.search`); a malformed one raises `FilterError`.
- `list_logs(conn, params)` is PocketBase's search result `{items, page, perPage, totalItems,
  totalPages}` (totals -1 with `skipTotal`), in table order unless `params.sort` says otherwise.
- `find_log(conn, id)` is one entry or None; `logs_stats(conn, filter)` is
  `[{date, total}]`, the number of entries per hour (`date` as `YYYY-MM-DD HH:00:00.000Z`),
  oldest first.
- An entry is `{id, created, data, message, level}`; `data` is its stored JSON as is
  (an `orjson.Fragment`, never decoded).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from instance_runtime.core.logs import LOGS_TABLE
from instance_runtime.core.records import ListParams
from instance_runtime.tools.search import (
    MAX_FILTER_LENGTH,
    SelectQuery,
    SimpleFieldResolver,
    build_filter,
    build_sort,
)

LOG_FILTER_FIELDS = ("id", "created", "level", "message", "data", r"^data\.[\w\.\:]*\w+$")
_COLUMNS = "`_logs`.`id`, `_logs`.`created`, `_logs`.`data`, `_logs`.`message`, `_logs`.`level`"
_HOUR = "strftime('%Y-%m-%d %H:00:00', `_logs`.`created`)"


def _entry(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    return {
        "id": row[0],
        "created": row[1],
        "data": orjson.Fragment(row[2]),
        "message": row[3],
        "level": row[4],
    }


def _resolver() -> SimpleFieldResolver:
    return SimpleFieldResolver(*LOG_FILTER_FIELDS)


def list_logs(conn: sqlite3.Connection, params: ListParams) -> dict[str, Any]:
    """See the module docstring (raises the 400 of `params.check()` first)."""
    params.check()
    resolver = _resolver()
    query = SelectQuery(LOGS_TABLE)
    if params.filter:
        query.and_where(build_filter(params.filter, resolver, max_length=MAX_FILTER_LENGTH))
    for term in build_sort(params.sort, resolver, LOGS_TABLE):
        query.and_order_by(term)
    page = query.build(_COLUMNS, limit=params.per_page, offset=params.offset)
    items = [_entry(row) for row in conn.execute(page.sql, page.params)]
    total = -1
    if not params.skip_total:
        count = query.build_count("id")
        total = int(conn.execute(count.sql, count.params).fetchone()[0])
    return params.result(items, total)


def find_log(conn: sqlite3.Connection, log_id: str) -> dict[str, Any] | None:
    """See the module docstring."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM `_logs` WHERE `id` = ? LIMIT 1", (log_id,))
    found = row.fetchone()
    return _entry(found) if found is not None else None


def logs_stats(conn: sqlite3.Connection, filter: str = "") -> list[dict[str, Any]]:
    """See the module docstring."""
    where, params = "", {}
    if filter:
        expr = build_filter(filter, _resolver())
        where, params = f" WHERE {expr.sql}", dict(expr.params)
    sql = (
        f"SELECT {_HOUR} AS `date`, count(`_logs`.`id`) AS `total` FROM `_logs`{where}"
        " GROUP BY `date` ORDER BY `date`"
    )
    return [
        {"date": f"{date}.000Z" if date else "", "total": int(total)}
        for date, total in conn.execute(sql, params)
    ]
