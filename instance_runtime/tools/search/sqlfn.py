"""SQLite JSON expressions that tolerate non-JSON columns (PocketBase's `dbutils` JSON helpers).

Every function takes an unquoted `table.column` path of an identifier the caller validated and
returns an SQL expression (no parameters).
"""

from __future__ import annotations

from instance_runtime.tools.search.resolver import quote_column


def json_each(column: str) -> str:
    """`json_each(...)` over the column's array, or over `[value]` for a non-array value."""
    c = quote_column(column)
    return (
        f"json_each(CASE WHEN iif(json_valid({c}), json_type({c})='array', FALSE)"
        f" THEN {c} ELSE json_array({c}) END)"
    )


def json_array_length(column: str) -> str:
    """The number of items of the column's array (0 for '' or NULL, 1 for a plain value)."""
    c = quote_column(column)
    return (
        f"json_array_length(CASE WHEN iif(json_valid({c}), json_type({c})='array', FALSE)"
        f" THEN {c} ELSE (CASE WHEN {c} = '' OR {c} IS NULL THEN json_array()"
        f" ELSE json_array({c}) END) END)"
    )


def json_extract(column: str, path: str) -> str:
    """`JSON_EXTRACT` of `path` (e.g. `a.b`, `[0].c`, or "" for the whole value).

    `path` must consist of validated identifier characters only (it is written into a string
    literal); a non-JSON column value is treated as a JSON string.
    """
    if path and not path.startswith("["):
        path = "." + path
    c = quote_column(column)
    return (
        f"(CASE WHEN json_valid({c}) THEN JSON_EXTRACT({c}, '${path}')"
        f" ELSE JSON_EXTRACT(json_object('pb', {c}), '$.pb{path}') END)"
    )
