"""The `sort` query parameter: `-created,+title,@random,@rowid,author.name:lower`.

Items are comma separated and trimmed; `-` means DESC, an optional `+` ASC. `@random` sorts
by `RANDOM()`, `@rowid` by the base table's SQLite rowid; anything else is resolved by the
`FieldResolver` like a filter identifier and must resolve to an SQL expression without
parameters (so `@request.*` values, `null`, texts and numbers are refused). An empty item
(`title,`) is an error, as in PocketBase.

Contract: `build_sort(text, resolver, table)` returns ORDER BY terms or raises `FilterError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.search.errors import FilterError, q
from instance_runtime.tools.search.resolver import FieldResolver

DEFAULT_MAX_SORT_FIELDS = 8
MAX_SORT_FIELD_LENGTH = 255
RANDOM_SORT_KEY = "@random"
ROWID_SORT_KEY = "@rowid"


@dataclass(frozen=True, slots=True)
class SortField:
    name: str
    direction: str  # "ASC" | "DESC"


def parse_sort(text: str) -> list[SortField]:
    """Split a sort string into fields (no validation; see `build_sort_field`)."""
    fields: list[SortField] = []
    for raw in text.split(","):
        item = raw.strip()
        if item.startswith("-"):
            fields.append(SortField(item[1:], "DESC"))
        else:
            fields.append(SortField(item.removeprefix("+"), "ASC"))
    return fields


def build_sort_field(sort_field: SortField, resolver: FieldResolver, table: str) -> str:
    """One ORDER BY term for `sort_field` over the base table `table`."""
    if sort_field.name == RANDOM_SORT_KEY:
        return "RANDOM()"
    if sort_field.name == ROWID_SORT_KEY:
        return f"{quote(table)}.{quote('_rowid_')} {sort_field.direction}"
    try:
        result = resolver.resolve(sort_field.name)
    except FilterError as err:
        raise FilterError(f"invalid sort field {q(sort_field.name)}") from err
    identifier = result.identifier
    # a value, NULL, or a placeholder that only a comparison can complete (`:changed`)
    if result.params or not identifier or identifier.lower() == "null" or "@" in identifier:
        raise FilterError(f"invalid sort field {q(sort_field.name)}")
    return f"{result.identifier} {sort_field.direction}"


def build_sort(
    text: str,
    resolver: FieldResolver,
    table: str,
    *,
    max_fields: int = DEFAULT_MAX_SORT_FIELDS,
) -> list[str]:
    """ORDER BY terms for a sort string ("" -> no terms); raises `FilterError`."""
    if not text:
        return []
    fields = parse_sort(text)
    if len(fields) > max_fields:
        raise FilterError("max sort expressions limit reached")
    terms = []
    for sort_field in fields:
        if len(sort_field.name) > MAX_SORT_FIELD_LENGTH:
            raise FilterError("max sort field length limit reached")
        terms.append(build_sort_field(sort_field, resolver, table))
    return terms
