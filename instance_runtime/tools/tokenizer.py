"""Splitting a text at separators that stand outside quotes and parentheses, as PocketBase's
`tools/tokenizer` does (its `fields` picker, index parser and view-query parser use it).

`tokenize(text, separators)`:
- cuts `text` at each separator character that is outside a quoted part (`'`, `"` or a
  backtick, closed by the same character) and outside parentheses (unless
  `ignore_parenthesis`); a character after a backslash neither opens nor closes anything;
- trims each token of the whitespace that is not itself a separator; with `keep_separator`
  the separator that ended a token stays at its end;
- drops empty tokens unless `keep_empty`;
- raises `UnbalancedError` when a token ends inside a quote or an open parenthesis (a `)`
  with none open counts for nothing), as the Go tokenizer's `ScanAll` fails.
"""

from __future__ import annotations

_QUOTES = frozenset("'\"`")
_WHITESPACE = "\t\n\v\f\r \x85\xa0"


class UnbalancedError(ValueError):
    """A token ended inside a quoted part or an open parenthesis (`text`, as read so far)."""

    def __init__(self, text: str) -> None:
        super().__init__(f"unbalanced parenthesis or quoted expression: {text!r}")
        self.text = text


def tokenize(
    text: str,
    separators: str = ",",
    *,
    keep_separator: bool = False,
    keep_empty: bool = False,
    ignore_parenthesis: bool = False,
) -> list[str]:
    """See the module docstring."""
    trim = "".join(ch for ch in _WHITESPACE if ch not in separators)
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    quote = ""
    previous = ""

    def finish() -> None:
        raw = "".join(current)
        if depth > 0 or quote:
            raise UnbalancedError(raw)
        token = raw.strip(trim)
        if token or keep_empty:
            tokens.append(token)

    for ch in text:
        if previous != "\\":
            if not ignore_parenthesis and not quote and ch == "(":
                depth += 1
            elif not ignore_parenthesis and not quote and ch == ")" and depth > 0:
                depth -= 1
            elif ch in _QUOTES:
                if quote == ch:
                    quote = ""
                elif not quote:
                    quote = ch
        if ch in separators and depth == 0 and not quote:
            if keep_separator:
                current.append(ch)
            finish()
            current, previous = [], ""
            continue
        current.append(ch)
        previous = ch
    if current:
        finish()
    return tokens
