"""Cutting an SQL text into its statements, as SQLite reads them.

Contract: `split_statements(text)` returns the statements of `text` in order, each without
its terminating `;` and trimmed; a `;` inside a string, a quoted identifier, a comment or a
trigger body (`CREATE TRIGGER ... BEGIN ...; END`) does not end a statement (SQLite's own
`sqlite3_complete` decides). Blank pieces (whitespace and comments only, `;;`) are dropped.
An unterminated last statement is kept as it is (SQLite then reports its error).
`is_blank(text)` is True for text made of whitespace and comments only.
"""

from __future__ import annotations

import sqlite3


def is_blank(text: str) -> bool:
    """See the module docstring."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = n if end < 0 else end + 1
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            return False
    return True


def split_statements(text: str) -> list[str]:
    """See the module docstring."""
    statements: list[str] = []
    start = 0
    position = text.find(";")
    while position >= 0:
        piece = text[start : position + 1]
        if sqlite3.complete_statement(piece):
            body = piece[:-1]
            if not is_blank(body):
                statements.append(body.strip())
            start = position + 1
        position = text.find(";", position + 1)
    rest = text[start:]
    if not is_blank(rest):
        statements.append(rest.strip())
    return statements
