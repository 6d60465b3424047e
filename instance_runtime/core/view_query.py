"""The SQL of a view collection's query as PocketBase reads and stores it.

PocketBase does not parse SQL: it tells a view query's columns and tables apart with its
tokenizer and a few regular expressions (its `identifiersParser`), refuses what that reading
cannot split, and stores the view wrapped in `SELECT * FROM (...)`. This module is that part,
without collections (`core.views` maps the columns to fields).

Contract:

- `parse_identifiers(query)` is PocketBase's `identifiersParser.parse`: comments dropped, JOIN
  keywords and WHERE/GROUP BY/HAVING/ORDER/LIMIT/WITH (after a space) marked, the words of
  the SELECT, FROM and JOIN parts (ON clauses skipped, DISTINCT ignored, every later SELECT of
  a UNION appended to the first) split at top-level commas into `Identifier(original, alias)`
  (`x`, `x alias` or `x AS alias`; the alias of `a.b` is `b`; quotes `` ` " [ ] ; `` trimmed
  from each dotted part, and `'` from aliases). An item of another shape raises
  `ViewQueryError` with PocketBase's text (`invalid identifier parts [a + b as c]`,
  `invalid identifier part - expected "as", got union`), as does an unbalanced quote or
  parenthesis (`unbalanced parenthesis or quoted expression: "..."`).
- `normalize_view_select_query(query)`: trimmed, `;` stripped from both ends, and
  `ViewQueryError("multiple statements are not supported")` when a top-level `;` is left.
- `query_table_info(conn, query)` is the `PRAGMA table_info` of a temporary view of the query
  (created and dropped inside a savepoint, nothing left behind); SQLite errors propagate.
- `normalize_view_query_id(conn, query)`: the query as is when its `id` column is TEXT, else
  wrapped so that `id` is `CAST(id as TEXT)` (columns taken from the parsed aliases).
- `go_quoted(text)` is Go's `%q` of `text`, as PocketBase's messages quote names.
- `save_view(conn, name, query)` (re)creates view `name` as PocketBase's `SaveView` does:
  `CREATE VIEW name AS SELECT * FROM (id-normalized query)`, checked by its table info.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass
from typing import Any

from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.security import random_string
from instance_runtime.tools.tokenizer import UnbalancedError, tokenize

_JOIN = re.compile(
    r"\s+(full\s+outer\s+join|left\s+outer\s+join|right\s+outer\s+join|full\s+join|"
    r"cross\s+join|inner\s+join|outer\s+join|left\s+join|right\s+join|join)\s+?",
    re.I | re.M,
)
_DISCARD = re.compile(r"\s+(where|group\s+by|having|order|limit|with)\s+?", re.I | re.M)
_COMMENTS = re.compile(r"(/\*[\s\S]*?\*/)|(--.+$)", re.M)
_JOIN_MARK, _DISCARD_MARK = "__pb_join__", "__pb_discard__"
_GO_SPACE = " \t\n\v\f\r\x85\xa0"  # Go's strings.TrimSpace (ASCII and Latin-1 spaces)


class ViewQueryError(ValueError):
    """A view query PocketBase refuses; the message is PocketBase's raw error text."""


@dataclass(frozen=True)
class Identifier:
    """One column or table of a view query: its expression and the name it goes by."""

    original: str
    alias: str


@dataclass(frozen=True)
class ParsedQuery:
    columns: list[Identifier]
    tables: list[Identifier]  # FROM items, then JOIN items


def go_quoted(text: str) -> str:
    """Go's `%q` of `text` (JSON's quoting is the same for printable text, quotes,
    backslashes, `\\n`, `\\t` and `\\r`)."""
    return json.dumps(text, ensure_ascii=False)


def _tokens(text: str, separators: str, **options: bool) -> list[str]:
    try:
        return tokenize(text, separators, **options)
    except UnbalancedError as exc:
        raise ViewQueryError(
            "unbalanced parenthesis or quoted expression: " + go_quoted(exc.text)
        ) from exc


def _trim_identifier(raw: str, extra: str = "") -> str:
    chars = '`"[];' + extra
    return ".".join(part.strip(chars) for part in raw.split("."))


def _identifier(parts: list[str]) -> Identifier:
    if len(parts) == 3:
        if parts[1].lower() != "as":
            raise ViewQueryError(f'invalid identifier part - expected "as", got {parts[1]}')
        original, alias = parts[0], parts[2]
    elif len(parts) == 2:
        original, alias = parts
    elif len(parts) == 1:
        original, alias = parts[0], parts[0].split(".")[-1]
    else:
        raise ViewQueryError(f"invalid identifier parts [{' '.join(parts)}]")
    # `'` is trimmed from aliases only: SQLite takes 'x' as a name where one is expected
    return Identifier(_trim_identifier(original), _trim_identifier(alias, "'"))


def _identifiers(raw: str) -> list[Identifier]:
    return [_identifier(_tokens(item, " \n\t")) for item in _tokens(raw, ",")]


def parse_identifiers(query: str) -> ParsedQuery:
    """See the module docstring."""
    text = query.strip(_GO_SPACE).strip(";")
    text = _COMMENTS.sub(" ", text)
    text = _JOIN.sub(f" {_JOIN_MARK} ", text)
    text = _DISCARD.sub(f" {_DISCARD_MARK} ", text)
    parts: dict[str, list[str]] = {"select": [], "from": [], "join": []}
    active: list[str] | None = None
    kind = ""
    skip = False
    for token in _tokens(text, ", \n\t", keep_separator=True):
        word = token.strip(_GO_SPACE).lower()
        if word in ("select", "from"):
            skip, kind, active = False, word, parts[word]
        elif word == "distinct":
            continue
        elif word == _JOIN_MARK:
            skip = False
            if kind == "join":
                parts["join"].append(",")
            kind, active = "join", parts["join"]
        elif word == _DISCARD_MARK:
            skip = True
        else:
            if kind == "join" and word == "on":
                skip = True
            if not skip and active is not None:
                active.append(" " + token)
    columns = _identifiers("".join(parts["select"]))
    tables = _identifiers("".join(parts["from"])) + _identifiers("".join(parts["join"]))
    return ParsedQuery(columns, tables)


def normalize_view_select_query(query: str) -> str:
    """See the module docstring."""
    query = query.strip(_GO_SPACE).strip(";")
    try:
        statements = tokenize(query, ";")
    except UnbalancedError:
        statements = []  # PocketBase ignores the tokenizer's error here
    if len(statements) > 1:
        raise ViewQueryError("multiple statements are not supported")
    return query


def _create_view(conn: sqlite3.Connection, name: str, query: str) -> list[dict[str, Any]]:
    query = normalize_view_select_query(query)
    conn.execute(f"DROP VIEW IF EXISTS {quote(name)}")
    conn.execute(f"CREATE VIEW {quote(name)} AS SELECT * FROM ({query})")
    cursor = conn.execute(f"PRAGMA table_info({quote(name)})")
    names = [d[0] for d in cursor.description]
    info = [dict(zip(names, row, strict=True)) for row in cursor]
    if not info:
        raise ViewQueryError(f"empty table info probably due to invalid or missing table {name}")
    return info


def query_table_info(conn: sqlite3.Connection, query: str) -> list[dict[str, Any]]:
    """See the module docstring."""
    conn.execute("SAVEPOINT pf_view_probe")
    try:
        return _create_view(conn, "_temp_" + random_string(6), query)
    finally:
        conn.execute("ROLLBACK TO pf_view_probe")
        conn.execute("RELEASE pf_view_probe")


def normalize_view_query_id(conn: sqlite3.Connection, query: str) -> str:
    """See the module docstring."""
    query = query.strip(_GO_SPACE).strip(";")
    for row in query_table_info(conn, query):
        if str(row["name"]).lower() == "id" and str(row["type"]).lower() == "text":
            return query
    columns = [
        f"CAST(`{c.alias}` as TEXT) `{c.alias}`" if c.alias == "id" else f"`{c.alias}`"
        for c in parse_identifiers(query).columns
    ]
    return f"SELECT {','.join(columns)} FROM ({query})"


def save_view(conn: sqlite3.Connection, name: str, query: str) -> None:
    """See the module docstring."""
    query = normalize_view_select_query(query)
    _create_view(conn, name, normalize_view_query_id(conn, query))
