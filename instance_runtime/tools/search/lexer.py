"""The scanner of PocketBase's filter language (the `fexpr` grammar as PocketBase 0.40 reads it).

Tokens: whitespace (space, tab, newline only), `&&`/`||` joins, the sign operators
(`= != > >= < <= ~ !~` and the any-of `?=`, `?!=`, ...), identifiers (`[A-Za-z@_#]` then
letters, digits, `_`, `.`, `:`), functions (`name(arg, ...)`, up to 3 levels of nesting, args
are identifiers, numbers, texts or nested functions; a trailing comma is accepted), numbers
(`-?digits(.digits)?`, also `-.5`), quoted texts (`'...'` or `"..."`; the escapes `\\n`, `\\t`,
`\\r`, `\\\\`, `\\'`, `\\"` are decoded, any other backslash stays as it is), groups (`(...)`,
scanned as raw text and parsed again by the parser) and `// comments` up to the end of line.

Behaviour copied from the reference on purpose: a NUL character reads as the end of input
(at a token start it ends the whole expression; inside a token it ends that token); `\\r`,
`\\f`, `\\v` and non-ASCII characters outside quotes are unexpected characters; inside a
group a `)` within a comment still closes the group.

Contract: `Scanner(text).scan()` returns the next `Token` (type `EOF` at the end) or raises
`FilterError`; it never raises anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from instance_runtime.tools.search.errors import FilterError, q

MAX_FUNCTION_DEPTH = 3

SIGN_OPERATORS = frozenset(
    {"=", "!=", "~", "!~", "<", "<=", ">", ">=", "?=", "?!=", "?~", "?!~", "?<", "?<=", "?>", "?>="}
)
JOIN_OPERATORS = frozenset({"&&", "||"})

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"'}
_WHITESPACE = frozenset(" \t\n")
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_DIGITS = frozenset("0123456789")
_SPECIAL_START = frozenset("@_#")
_COMBINE = frozenset(".:")
_IDENT_START = _LETTERS | _SPECIAL_START
_IDENT_PART = _LETTERS | _DIGITS | _COMBINE | frozenset("_")
_SIGN_CHARS = frozenset("=?!><~")
_JOIN_CHARS = frozenset("&|")
_QUOTES = frozenset("'\"")
# the start of a function argument, as shown in error messages
_ARG_LITERAL = re.compile(r"[A-Za-z@_#][A-Za-z0-9_.:]*|['\"][^'\"]*|-?[0-9.]*")
# characters that matter while skipping over a group's raw text
_GROUP_STOP = re.compile(r"[()'\"\x00]")


class TokenType(StrEnum):
    EOF = "eof"
    WHITESPACE = "whitespace"
    JOIN = "join"
    SIGN = "sign"
    IDENTIFIER = "identifier"
    FUNCTION = "function"
    NUMBER = "number"
    TEXT = "text"
    GROUP = "group"
    COMMENT = "comment"


@dataclass(frozen=True, slots=True)
class Token:
    """One scanned token; `args` holds a function token's argument tokens."""

    type: TokenType
    literal: str
    args: tuple[Token, ...] = ()


def is_valid_identifier(literal: str) -> bool:
    """An identifier must not end with `.`/`:` and must not be a lone `@`, `_` or `#`."""
    if not literal or literal[-1] in _COMBINE:
        return False
    return not (len(literal) == 1 and literal in _SPECIAL_START)


class Scanner:
    """A single-use scanner over `text` (a filter or a group's raw inner text)."""

    def __init__(self, text: str, max_function_depth: int = MAX_FUNCTION_DEPTH) -> None:
        self._text = text
        self._pos = 0
        self._max_depth = max_function_depth

    # ------------------------------------------------------------------ reading
    def _read(self) -> str:
        """The next character, or "" at the end (a NUL also reads as "" but is consumed)."""
        if self._pos >= len(self._text):
            return ""
        ch = self._text[self._pos]
        self._pos += 1
        return "" if ch == "\x00" else ch

    def _unread(self) -> None:
        if self._pos > 0:
            self._pos -= 1

    # ------------------------------------------------------------------ tokens
    def scan(self) -> Token:
        """The next token; raises `FilterError` on a malformed one."""
        ch = self._read()
        if ch == "":
            return Token(TokenType.EOF, "")
        self._unread()
        if ch in _WHITESPACE:
            return self._scan_whitespace()
        if ch == "(":
            return self._scan_group()
        if ch in _IDENT_START:
            return self._scan_identifier(self._max_depth)
        if ch == "-" or ch in _DIGITS:
            return self._scan_number()
        if ch in _QUOTES:
            return Token(TokenType.TEXT, self._scan_text(raw=False))
        if ch in _SIGN_CHARS:
            return self._scan_operator(TokenType.SIGN, _SIGN_CHARS, SIGN_OPERATORS)
        if ch in _JOIN_CHARS:
            return self._scan_operator(TokenType.JOIN, _JOIN_CHARS, JOIN_OPERATORS)
        if ch == "/":
            return self._scan_comment()
        self._pos += 1
        raise FilterError(f"unexpected character {q(ch)}")

    def _scan_whitespace(self) -> Token:
        start = self._pos
        while True:
            ch = self._read()
            if ch == "":
                break
            if ch not in _WHITESPACE:
                self._unread()
                break
        return Token(TokenType.WHITESPACE, self._text[start : self._pos])

    def _scan_number(self) -> Token:
        buf: list[str] = []
        had_dot = False
        while True:
            ch = self._read()
            if ch == "":
                break
            if ch in _DIGITS or (ch == "-" and not buf) or (ch == "." and not had_dot):
                buf.append(ch)
                had_dot = had_dot or ch == "."
                continue
            self._unread()
            break
        literal = "".join(buf)
        if literal == "-" or literal.startswith(".") or literal.endswith("."):
            raise FilterError(f"invalid number {q(literal)}")
        return Token(TokenType.NUMBER, literal)

    def _scan_text(self, *, raw: bool) -> str:
        """A quoted text: its decoded content, or (`raw`) its exact source with the quotes."""
        quote = self._read()
        start = self._pos - 1
        buf: list[str] = []
        while True:
            ch = self._read()
            if ch == "":
                break
            if ch == "\\":
                nxt = self._read()
                if nxt == "":
                    break
                buf.append(_ESCAPES.get(nxt, "\\" + nxt))
                continue
            if ch == quote:
                if raw:
                    return self._text[start : self._pos]
                return "".join(buf)
            buf.append(ch)
        raise FilterError(f"invalid quoted text {q(quote + ''.join(buf))}")

    def _scan_comment(self) -> Token:
        if self._read() != "/" or self._read() != "/":
            raise FilterError("invalid comment")
        start = self._pos
        while self._read() not in ("", "\n"):
            pass
        return Token(TokenType.COMMENT, self._text[start : self._pos].strip(" \t\n\x00"))

    def _scan_identifier(self, depth: int) -> Token:
        start = self._pos
        self._pos += 1  # the (already checked) start character
        while True:
            ch = self._read()
            if ch == "":  # the end, or a consumed NUL (never part of the identifier)
                literal = self._text[start : self._pos].rstrip("\x00")
                break
            if ch == "(":
                name = self._text[start : self._pos - 1]
                if depth <= 0:
                    raise FilterError(
                        f"max nested function arguments reached (max: {self._max_depth})"
                    )
                if not is_valid_identifier(name):
                    raise FilterError(f"invalid function name {q(name)}")
                self._unread()
                return self._scan_function_args(name, depth)
            if ch not in _IDENT_PART:
                self._unread()
                literal = self._text[start : self._pos]
                break
        if not is_valid_identifier(literal):
            raise FilterError(f"invalid identifier {q(literal)}")
        return Token(TokenType.IDENTIFIER, literal)

    def _scan_operator(
        self, kind: TokenType, chars: frozenset[str], valid: frozenset[str]
    ) -> Token:
        buf: list[str] = []
        while True:
            ch = self._read()
            if ch == "":
                break
            if ch not in chars:
                self._unread()
                break
            buf.append(ch)
        literal = "".join(buf)
        if literal not in valid:
            raise FilterError(f"invalid {kind.value} operator {q(literal)}")
        return Token(kind, literal)

    def _scan_group(self) -> Token:
        """The raw text between `(` and its matching `)` (quoted texts skipped as a whole)."""
        self._pos += 1  # "("
        start = self._pos
        depth = 1
        while True:
            found = _GROUP_STOP.search(self._text, self._pos)
            if found is None:
                self._pos = len(self._text)
                break
            ch = found.group()
            self._pos = found.start()
            if ch == "\x00":
                self._pos += 1
                break
            if ch in _QUOTES:
                self._scan_text(raw=True)
                continue
            self._pos += 1
            if ch == "(":
                depth += 1
            else:
                depth -= 1
                if depth == 0:
                    return Token(TokenType.GROUP, self._text[start : self._pos - 1])
        raise FilterError(f"invalid formatted group - missing {depth} closing bracket(s)")

    def _scan_function_args(self, name: str, depth: int) -> Token:
        if self._read() != "(":
            raise FilterError(f"invalid or incomplete function call {q(name)}")
        args: list[Token] = []
        expect_comma = False
        while True:
            ch = self._read()
            if ch == "":
                raise FilterError(f"invalid or incomplete function {q(name)} (expected ')')")
            if ch == ")":
                return Token(TokenType.FUNCTION, name, tuple(args))
            if ch in _WHITESPACE:
                self._scan_whitespace()
                continue
            if ch == "/":
                self._unread()
                self._scan_comment()
                continue
            is_comma = ch == ","
            if expect_comma and not is_comma:
                raise FilterError(f"expected comma after the last argument in function {q(name)}")
            if not expect_comma and is_comma:
                raise FilterError(f"unexpected comma in function {q(name)}")
            expect_comma = False
            if is_comma:
                continue
            self._unread()
            start = self._pos
            if ch in _IDENT_START:
                kind = "identifier"
            elif ch == "-" or ch in _DIGITS:
                kind = "number"
            elif ch in _QUOTES:
                kind = "text"
            else:
                raise FilterError(f"unsupported argument character {q(ch)} in function {q(name)}")
            try:
                args.append(self._scan_argument(kind, depth))
            except FilterError as err:
                found = _ARG_LITERAL.match(self._text, start)
                shown = found.group() if found else ""
                raise FilterError(
                    f"invalid {kind} argument {q(shown)} in function {q(name)}: {err}"
                ) from err
            expect_comma = True

    def _scan_argument(self, kind: str, depth: int) -> Token:
        if kind == "identifier":
            return self._scan_identifier(depth - 1)
        if kind == "number":
            return self._scan_number()
        return Token(TokenType.TEXT, self._scan_text(raw=False))
