"""Lexer and parser of the filter language, table-driven. The accepted/refused cases and the
decoded strings were checked against PocketBase 0.40.6 (fexpr v0.6.0) over HTTP."""

from __future__ import annotations

import pytest

from instance_runtime.tools.search import FilterError, parse
from instance_runtime.tools.search.lexer import Scanner, Token, TokenType
from instance_runtime.tools.search.parser import MAX_NESTING, Comparison, Group


def show_token(token: Token) -> str:
    if token.type is TokenType.FUNCTION:
        return f"{token.literal}({', '.join(show_token(a) for a in token.args)})"
    if token.type is TokenType.TEXT:
        return repr(token.literal)
    return token.literal


def show(groups: tuple[Group, ...]) -> str:
    """A compact rendering: `a = 1 || (b > 'x')`."""
    out: list[str] = []
    for i, group in enumerate(groups):
        if i:
            out.append(group.join)
        item = group.item
        if isinstance(item, Comparison):
            out.append(f"{show_token(item.left)} {item.op} {show_token(item.right)}")
        else:
            out.append(f"({show(item)})")
    return " ".join(out)


ACCEPTED = [
    ("a=1", "a = 1"),
    ("a = 'x' && b != \"y\"", "a = 'x' && b != 'y'"),
    ("a ?= 1 || b ?!= 2 || c ?~ 'x' || d ?!~ 'x'", "a ?= 1 || b ?!= 2 || c ?~ 'x' || d ?!~ 'x'"),
    ("a ?> 1 && a ?>= 1 && a ?< 1 && a ?<= 1", "a ?> 1 && a ?>= 1 && a ?< 1 && a ?<= 1"),
    (
        "a > 1 && a >= 1 && a < 1 && a <= 1 && a ~ 1 && a !~ 1",
        "a > 1 && a >= 1 && a < 1 && a <= 1 && a ~ 1 && a !~ 1",
    ),
    ("(a=1 || b=2) && c=3", "(a = 1 || b = 2) && c = 3"),
    ("((a=1))", "((a = 1))"),
    ("a=-1", "a = -1"),
    ("a!=-1.5", "a != -1.5"),
    ("-.5 = -0.5", "-.5 = -0.5"),
    ("a.b.c:lower = @request.auth.id", "a.b.c:lower = @request.auth.id"),
    ("@collection.users:u.name ?= _x", "@collection.users:u.name ?= _x"),
    ("#a = 1", "#a = 1"),
    ("a = 1 // comment", "a = 1"),
    ("// head\na = 1", "a = 1"),
    ("(a = 1 // inside\n)", "(a = 1)"),
    ("a\n=\t1", "a = 1"),
    ("geoDistance(a.lon, a.lat, 1, -2.5) < 10", "geoDistance(a.lon, a.lat, 1, -2.5) < 10"),
    ("geoDistance(1,2,3,4,) > 0", "geoDistance(1, 2, 3, 4) > 0"),
    ("f( 1 // c\n , 'x' ) = 1", "f(1, 'x') = 1"),
    ("a(b(c(1))) = 1", "a(b(c(1))) = 1"),
    ("strftime('%Y', created) = '2024'", "strftime('%Y', created) = '2024'"),
    # a group where an operand/operator was expected drops the unfinished comparison
    ("t (1=1)", "(1 = 1)"),
    ("t = (1=1)", "(1 = 1)"),
    ("(1=1)(2=2)", "(1 = 1) && (2 = 2)"),
    ("1=1 || (2=3) (4=4)", "1 = 1 || (2 = 3) || (4 = 4)"),
    # NUL ends a token and is consumed there; at a token start it ends the input
    ("t\x00= 'p'", "t = 'p'"),
    ("a = 'x'\x00 junk )", "a = 'x'"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepted(text: str, expected: str) -> None:
    assert show(parse(text)) == expected


STRINGS = [
    (r"'a\nb'", "a\nb"),
    (r"'a\tb'", "a\tb"),
    (r"'a\rb'", "a\rb"),
    (r"'a\\b'", "a\\b"),
    (r"'a\'b'", "a'b"),
    (r"'a\"b'", 'a"b'),
    (r'"a\'b"', "a'b"),
    (r'"x\"y"', 'x"y'),
    (r"'p\\'", "p\\"),
    # any other escape keeps its backslash
    (r"'\u0041'", "\\u0041"),
    (r"'\x41'", "\\x41"),
    (r"'\b\f\v\0\/\z\ '", "\\b\\f\\v\\0\\/\\z\\ "),
    ("'raw\nnew\tline'", "raw\nnew\tline"),
    ("'Ünïcödé \u2028'", "Ünïcödé \u2028"),
    ("'mixed \"quotes\" ok'", 'mixed "quotes" ok'),
]


@pytest.mark.parametrize(("literal", "value"), STRINGS)
def test_string_escapes(literal: str, value: str) -> None:
    groups = parse(f"t = {literal}")
    item = groups[0].item
    assert isinstance(item, Comparison)
    assert item.right == Token(TokenType.TEXT, value)


def test_escaped_text_inside_a_group_is_decoded_once() -> None:
    item = parse(r"(t = 'a\\b\'c' && u = 'x')")[0].item
    assert isinstance(item, tuple)
    first = item[0].item
    assert isinstance(first, Comparison)
    assert first.right.literal == "a\\b'c"


REFUSED = [
    "",
    "   ",
    "()",
    "(  )",
    "(// x\n)",
    "a",
    "a =",
    "a = 1 &&",
    "= 1",
    "a == 1",
    "a =! 1",
    "a = 1 &| b = 2",
    "a = 1 & b = 2",
    "a = 1 b = 2",
    ")",
    "a = 'x' )",
    "(a = 1",
    "(a = 1 // )\n)",
    "a = 'unterminated",
    r"t = 'p\'",
    "t = 'p\x00q'",
    "t\r= 1",
    "t\f= 1",
    "t\v= 1",
    "t\u00a0= 1",
    "tá = 1",
    "t. = 1",
    "t: = 1",
    "_ = 1",
    "@ = 1",
    "# = 1",
    "1. = 1",
    ".5 = 1",
    "- = 1",
    "--1 = 1",
    "1-1 = 0",
    "t = 1.2.3",
    "a = 1 / c",
    "a(b(c(d(1)))) = 1",
    "geoDistance (1,2,3,4) > 0",
    "geoDistance(,1,2,3,4) > 0",
    "geoDistance(1 2) > 0",
    "geoDistance((1)) > 0",
    "geoDistance(1, 2",
    "f.(1) = 1",
    "a = 'x' 'y'",
    "a = 'x' \x00 junk",  # a NUL right after whitespace is eaten by the whitespace token
]


@pytest.mark.parametrize("text", REFUSED)
def test_refused(text: str) -> None:
    with pytest.raises(FilterError):
        parse(text)


def test_nesting_limit() -> None:
    deep = "(" * MAX_NESTING + "a=1" + ")" * MAX_NESTING
    assert show(parse(deep)).count("(") == MAX_NESTING
    too_deep = "(" * (MAX_NESTING + 2) + "a=1" + ")" * (MAX_NESTING + 2)
    with pytest.raises(FilterError):
        parse(too_deep)


def test_scanner_token_stream() -> None:
    scanner = Scanner("a.b:lower?!~'x' || (c=1)//end")
    tokens = []
    while (token := scanner.scan()).type is not TokenType.EOF:
        tokens.append((token.type.value, token.literal))
    assert tokens == [
        ("identifier", "a.b:lower"),
        ("sign", "?!~"),
        ("text", "x"),
        ("whitespace", " "),
        ("join", "||"),
        ("whitespace", " "),
        ("group", "c=1"),
        ("comment", "end"),
    ]


def test_parse_results_are_cached_and_immutable() -> None:
    assert parse("a = 1") is parse("a = 1")
