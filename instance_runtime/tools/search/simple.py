"""`SimpleFieldResolver`: a resolver over a fixed list of allowed column names.

For searches over non-record tables (collections list, logs). An allowed entry is a plain name
or, when it starts with `^` and ends with `$`, a regular expression (ASCII `\\w`). `a.b.c`
resolves to `JSON_EXTRACT("a", '$.b.c')` (numeric parts as array indexes) and compares without
NULL normalization; a plain name resolves to its quoted column.
"""

from __future__ import annotations

import re
from functools import lru_cache

from instance_runtime.tools.search.errors import FilterError, q
from instance_runtime.tools.search.resolver import (
    Names,
    NullFallback,
    ResolverResult,
    SelectQueryLike,
    quote_column,
)

_UNSAFE = re.compile(r"[^\w.*\-@#]+", re.ASCII)


def columnify(name: str) -> str:
    """`name` stripped of every character that cannot be part of a column identifier."""
    return _UNSAFE.sub("", name)


@lru_cache(maxsize=256)
def _pattern(expr: str) -> re.Pattern[str] | None:
    try:
        return re.compile(expr, re.ASCII)
    except re.error:
        return None


def matches_allowed(name: str, allowed: tuple[str, ...] | list[str]) -> bool:
    """True if `name` equals a plain entry or fully matches a `^...$` entry."""
    for entry in allowed:
        if entry.startswith("^") and entry.endswith("$"):
            pattern = _pattern(entry)
            if pattern is not None and pattern.fullmatch(name):
                return True
        elif entry == name:
            return True
    return False


def is_array_index(part: str) -> bool:
    """True if `part` reads as a (64-bit) integer array index, as Go's `strconv.Atoi`."""
    return part.isascii() and part.isdigit() and int(part) < 2**63


def json_path(parts: list[str]) -> str:
    """A JSON path without `$` (`a.b`, `[0].c`, `a[1]`) for the cleaned `parts`; raises
    `FilterError` on an empty part (SQLite would reject the path)."""
    out = []
    for i, part in enumerate(parts):
        clean = columnify(part)
        if not clean:
            raise FilterError("invalid empty JSON path segment")
        if is_array_index(clean):
            out.append(f"[{clean}]")
        else:
            out.append(f".{clean}" if i > 0 else clean)
    return "".join(out)


def _dollar(path: str) -> str:
    return "$" + path if path.startswith("[") else "$." + path


class SimpleFieldResolver:
    """Resolves only the allowed names (see the module docstring); no joins."""

    def __init__(self, *allowed: str, names: Names | None = None) -> None:
        self.allowed = tuple(allowed)
        self._names = names or Names()

    @property
    def names(self) -> Names:
        return self._names

    def update_query(self, query: SelectQueryLike) -> None:
        """Nothing to add."""

    def resolve(self, field: str) -> ResolverResult:
        if not matches_allowed(field, self.allowed):
            raise FilterError(f"failed to resolve field {q(field)}")
        parts = field.split(".")
        column = columnify(parts[0])
        if not column:
            raise FilterError(f"failed to resolve field {q(field)}")
        if len(parts) == 1:
            return ResolverResult(quote_column(column))
        return ResolverResult(
            f"JSON_EXTRACT({quote_column(column)}, '{_dollar(json_path(parts[1:]))}')",
            null_fallback=NullFallback.DISABLED,
        )
