"""Property tests of the compiler: any input is a `FilterError` or SQL whose values are all
parameters, and that SQL runs on a real SQLite table without error."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from instance_runtime.tools.search import Expr, FilterError, SimpleFieldResolver, build_filter
from instance_runtime.tools.search.sort import build_sort

PROPERTY = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
SENTINEL = "§"  # in generated texts only: it must never reach the SQL text
NUMBER_MARK = "7357"  # in generated numbers only
PLACEHOLDER = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")

FIELDS = ["id", "a", "b", "c", "j.x", "j.y.0", "j.x:lower"]
OPERATORS = [
    "=",
    "!=",
    ">",
    ">=",
    "<",
    "<=",
    "~",
    "!~",
    "?=",
    "?!=",
    "?>",
    "?>=",
    "?<",
    "?<=",
    "?~",
    "?!~",
]
MACROS = ["@now", "@todayStart", "@yearEnd", "@weekday", "@month", "true", "false", "null"]


def resolver() -> SimpleFieldResolver:
    return SimpleFieldResolver("id", "a", "b", "c", r"^j\.[\w\.\:]*\w+$")


@pytest.fixture(scope="module")
def db() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.execute(
        "CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT DEFAULT '' NOT NULL,"
        " b NUMERIC DEFAULT 0 NOT NULL, c BOOLEAN DEFAULT FALSE NOT NULL, j JSON DEFAULT NULL)"
    )
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
        [
            ("r1", "hello", 1, 1, '{"x": 1, "y": [2]}'),
            ("r2", "", 0, 0, None),
            ("r3", "100% _x_ \\", -2.5, 1, '"str"'),
            ("r4", "Ünï", 7357, 0, "[1, 2]"),
        ],
    )
    yield conn
    conn.close()


def check_runs(conn: sqlite3.Connection, expr: Expr) -> None:
    """The SQL uses only bound placeholders and executes cleanly."""
    for name in PLACEHOLDER.findall(expr.sql):
        assert name in expr.params, name
    conn.execute(f"SELECT id FROM t WHERE {expr.sql}", dict(expr.params)).fetchall()


FILTER_CHARS = st.sampled_from(
    [*list("abcj.:_@#()'\"\\/ \t\n=!<>~?&|,-0123456789%"), "\x00", "\r", "é", SENTINEL]
)


@PROPERTY
@given(st.text(FILTER_CHARS, max_size=60) | st.text(max_size=40))
def test_any_text_compiles_or_fails_cleanly(db: sqlite3.Connection, text: str) -> None:
    try:
        expr = build_filter(text, resolver())
    except FilterError:
        return
    assert SENTINEL not in expr.sql
    check_runs(db, expr)


def quoted(value: str, quote: str) -> str:
    return quote + value.replace("\\", "\\\\").replace(quote, "\\" + quote) + quote


texts = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12
).map(lambda v: SENTINEL + v)
numbers = st.builds(
    lambda sign, frac: f"{sign}{NUMBER_MARK}{frac}",
    st.sampled_from(["", "-"]),
    st.sampled_from(["", ".5", ".25"]),
)
operands = st.one_of(
    st.sampled_from(FIELDS),
    st.sampled_from(MACROS),
    st.builds(quoted, texts, st.sampled_from(["'", '"'])),
    numbers,
    st.builds(lambda a, b: f"geoDistance({a}, {b}, 1, 2)", st.sampled_from(["b", "j.x"]), numbers),
    st.builds(lambda f, v: f"strftime('%Y', {v})", texts, st.sampled_from(["a", "b", "@now"])),
)
comparisons = st.builds(
    lambda left, op, right: f"{left} {op} {right}", operands, st.sampled_from(OPERATORS), operands
)
filters = st.recursive(
    comparisons,
    lambda children: st.one_of(
        st.builds(
            lambda x, j, y: f"{x} {j} {y}", children, st.sampled_from(["&&", "||"]), children
        ),
        children.map(lambda x: f"({x})"),
        children.map(lambda x: f"{x} // note {SENTINEL}\n"),
    ),
    max_leaves=8,
)


@PROPERTY
@given(filters)
def test_values_are_always_parameters(db: sqlite3.Connection, text: str) -> None:
    expr = build_filter(text, resolver())
    assert SENTINEL not in expr.sql
    assert NUMBER_MARK not in expr.sql
    check_runs(db, expr)


@PROPERTY
@given(texts, st.sampled_from(["'", '"']))
def test_texts_round_trip_into_parameters(value: str, quote: str) -> None:
    expr = build_filter(f"a = {quoted(value, quote)}", resolver())
    assert dict(expr.params) == {"t1": value}
    assert expr.sql == '"a" = :t1'


@PROPERTY
@given(st.text(st.sampled_from([*list("abcj.:_@-+, x"), SENTINEL]), max_size=30))
def test_any_sort_compiles_or_fails_cleanly(db: sqlite3.Connection, text: str) -> None:
    try:
        terms = build_sort(text, resolver(), "t")
    except FilterError:
        return
    assert SENTINEL not in " ".join(terms)
    if terms:
        db.execute(f"SELECT id FROM t ORDER BY {', '.join(terms)}").fetchall()
