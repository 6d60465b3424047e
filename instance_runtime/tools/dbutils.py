"""SQL helpers that know nothing of collections: identifier quoting and CREATE INDEX parsing.

`parse_index` / `Index.build` mirror PocketBase's `tools/dbutils/index.go`: an index expression
is parsed leniently and rebuilt for a given table (an invalid one has an empty `index_name`,
`table_name` or no columns, see `Index.is_valid`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from instance_runtime.tools.tokenizer import UnbalancedError, tokenize

_INDEX_RE = re.compile(
    r"create\s+(unique\s+)?\s*index\s*(if\s+not\s+exists\s+)?(\S*)\s+on\s+(\S*)\s*\(([\s\S]*)\)"
    r"(?:\s*where\s+([\s\S]*))?",
    re.IGNORECASE | re.MULTILINE,
)
_COLUMN_RE = re.compile(
    r"^([\s\S]+?)(?:\s+collate\s+([\w]+))?(?:\s+(asc|desc))?$", re.IGNORECASE | re.MULTILINE
)
_TRIM = "`\"'[]\r\n\t\f\v "


def quote(identifier: str) -> str:
    """`identifier` as a double-quoted SQLite identifier (embedded quotes doubled)."""
    return '"' + identifier.replace('"', '""') + '"'


@dataclass
class IndexColumn:
    name: str
    collate: str = ""
    sort: str = ""


@dataclass
class Index:
    schema_name: str = ""
    index_name: str = ""
    table_name: str = ""
    where: str = ""
    columns: list[IndexColumn] = field(default_factory=list)
    unique: bool = False
    optional: bool = False

    def is_valid(self) -> bool:
        return bool(self.index_name and self.table_name and self.columns)

    def build(self) -> str:
        """The normalized CREATE INDEX statement ("" when not valid)."""
        if not self.is_valid():
            return ""
        out = ["CREATE "]
        if self.unique:
            out.append("UNIQUE ")
        out.append("INDEX ")
        if self.optional:
            out.append("IF NOT EXISTS ")
        if self.schema_name:
            out.append(f"`{self.schema_name}`.")
        out.append(f"`{self.index_name}` ON `{self.table_name}` (")
        cols = [c for c in self.columns if c.name.strip()]
        if len(self.columns) > 1:
            out.append("\n  ")
        parts = []
        for col in cols:
            name = col.name.strip()
            text = name if ("(" in col.name or " " in col.name) else f"`{name}`"
            if col.collate:
                text += f" COLLATE {col.collate}"
            if col.sort:
                text += f" {col.sort.upper()}"
            parts.append(text)
        out.append(",\n  ".join(parts))
        if parts and len(self.columns) > 1:
            out.append("\n")
        out.append(")")
        if self.where:
            out.append(f" WHERE {self.where}")
        return "".join(out)


def _tokens(text: str, separators: str) -> list[str]:
    """The tokens of `text`, none when it is unbalanced (PocketBase ignores the error)."""
    try:
        return tokenize(text, separators)
    except UnbalancedError:
        return []


def parse_index(expr: str) -> Index:
    """Parse a CREATE INDEX expression as PocketBase does (never raises)."""
    result = Index()
    match = _INDEX_RE.search(expr)
    if not match:
        return result
    result.unique = bool((match.group(1) or "").strip())
    result.optional = bool((match.group(2) or "").strip())
    name_parts = _tokens(match.group(3) or "", ".")
    if len(name_parts) == 2:
        result.schema_name = name_parts[0].strip(_TRIM)
        result.index_name = name_parts[1].strip(_TRIM)
    elif name_parts:
        result.index_name = name_parts[0].strip(_TRIM)
    result.table_name = (match.group(4) or "").strip(_TRIM)
    for raw in _tokens(match.group(5) or "", ","):
        col = _COLUMN_RE.match(raw)
        if not col:
            continue
        name = col.group(1).strip(_TRIM)
        if not name:
            continue
        result.columns.append(
            IndexColumn(name, (col.group(2) or "").strip(), (col.group(3) or "").upper())
        )
    result.where = (match.group(6) or "").strip()
    return result
