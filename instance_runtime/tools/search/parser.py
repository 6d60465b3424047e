"""The parser of the filter language: text -> a tree of joined comparisons.

Grammar (as PocketBase's `fexpr.Parse`): a sequence of items, each either a comparison
`OPERAND SIGN OPERAND` (an operand is an identifier, function, text or number) or a
parenthesised group, separated by `&&` / `||`. Every item carries the join that precedes it
(the first one `&&`). The compiler writes the items joined by `AND` / `OR` in order, so SQL's
precedence applies: `a || b && c` means `a OR (b AND c)`, as in PocketBase.

Quirks kept from the reference so that both engines accept the same filters: a group placed
where an operator or operand was expected drops the unfinished comparison (`title (x=1)`
parses as `(x=1)`); two groups in a row are joined with the last seen join; an empty group is
an error ("empty filter expression").

Contract: `parse(text)` returns a non-empty tuple of `Group`s or raises `FilterError`; results
are cached (the tree is immutable). Nesting deeper than `MAX_NESTING` groups is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from instance_runtime.tools.search.errors import FilterError, q
from instance_runtime.tools.search.lexer import Scanner, Token, TokenType

# Groups nested deeper than this are refused (the reference has no limit; Python's stack has).
MAX_NESTING = 200

_OPERAND_TYPES = frozenset(
    {TokenType.IDENTIFIER, TokenType.TEXT, TokenType.NUMBER, TokenType.FUNCTION}
)


@dataclass(frozen=True, slots=True)
class Comparison:
    """`left op right`; `op` is one of `lexer.SIGN_OPERATORS`."""

    left: Token
    op: str
    right: Token


@dataclass(frozen=True, slots=True)
class Group:
    """One item of an expression list: a comparison or a nested list, with its join."""

    join: str  # "&&" or "||"
    item: Comparison | tuple[Group, ...]


def parse(text: str) -> tuple[Group, ...]:
    """Parse a filter expression (see the module docstring); raises `FilterError`."""
    try:
        return _parse_cached(text)
    except RecursionError as err:  # defensive: MAX_NESTING keeps well below the stack limit
        raise FilterError("filter expression nested too deeply") from err


@lru_cache(maxsize=512)
def _parse_cached(text: str) -> tuple[Group, ...]:
    return _parse(text, 0)


def _parse(text: str, depth: int) -> tuple[Group, ...]:
    if depth > MAX_NESTING:
        raise FilterError(f"max nested groups reached (max: {MAX_NESTING})")
    result: list[Group] = []
    scanner = Scanner(text)
    step = "before_sign"
    join = "&&"
    left: Token | None = None
    op = ""
    while True:
        token = scanner.scan()
        if token.type is TokenType.EOF:
            break
        if token.type in (TokenType.WHITESPACE, TokenType.COMMENT):
            continue
        if token.type is TokenType.GROUP:
            result.append(Group(join, _parse(token.literal, depth + 1)))
            step = "join"
            continue
        if step == "before_sign":
            if token.type not in _OPERAND_TYPES:
                raise FilterError(
                    "expected left operand (identifier, function, text or number), "
                    f"got {q(token.literal)} ({token.type.value})"
                )
            left = token
            step = "sign"
        elif step == "sign":
            if token.type is not TokenType.SIGN:
                raise FilterError(
                    f"expected a sign operator, got {q(token.literal)} ({token.type.value})"
                )
            op = token.literal
            step = "after_sign"
        elif step == "after_sign":
            if token.type not in _OPERAND_TYPES or left is None:
                raise FilterError(
                    "expected right operand (identifier, function text or number), "
                    f"got {q(token.literal)} ({token.type.value})"
                )
            result.append(Group(join, Comparison(left, op, token)))
            step = "join"
        else:
            if token.type is not TokenType.JOIN:
                raise FilterError(f"expected && or ||, got {q(token.literal)} ({token.type.value})")
            join = token.literal
            step = "before_sign"
    if step != "join":
        if not result and left is None:
            raise FilterError("empty filter expression")
        raise FilterError("invalid or incomplete filter expression")
    return tuple(result)
