"""The compiler: exact SQL and parameters (names are deterministic per query), PocketBase's
NULL/empty and LIKE semantics, multi-match ("all" vs "any of"), functions, macros, sort,
the SELECT builder and `SimpleFieldResolver`."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

import pytest

from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.search import (
    FilterError,
    Join,
    MultiMatchSubquery,
    Names,
    ResolverResult,
    SelectQuery,
    SelectQueryLike,
    SimpleFieldResolver,
    build_filter,
    build_sort,
    parse_sort,
    replace_placeholders,
)
from instance_runtime.tools.search.compiler import go_string, wrap_like_value
from instance_runtime.tools.search.sort import SortField
from instance_runtime.tools.search.sqlfn import json_each

NOW = datetime(2024, 2, 29, 13, 14, 15, 678000, tzinfo=UTC)


def simple() -> SimpleFieldResolver:
    return SimpleFieldResolver("a", "b", "c", r"^j\.[\w\.\:]*\w+$")


def compile_simple(text: str) -> tuple[str, dict[str, Any]]:
    expr = build_filter(text, simple(), now=NOW)
    return expr.sql, dict(expr.params)


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("a = 'x'", '"a" = :t1', {"t1": "x"}),
    ("a = b", "COALESCE(\"a\", '') = COALESCE(\"b\", '')", {}),
    ("a != b", "COALESCE(\"a\", '') IS NOT COALESCE(\"b\", '')", {}),
    ("a = null", '(("a" = \'\' OR "a" IS NULL))', {}),
    ("NULL = a", '((\'\' = "a" OR "a" IS NULL))', {}),
    ("a != null", '(("a" IS NOT \'\' AND "a" IS NOT NULL))', {}),
    ("a = ''", '(("a" = \'\' OR "a" IS NULL))', {"t1": ""}),
    ("'' = null && null != ''", "('' = '' AND '' IS NOT '')", {"t1": "", "t2": ""}),
    ("a = true", '"a" = 1', {}),
    ("a != False", '"a" IS NOT 0', {}),
    ("TRUE = a", '1 = "a"', {}),
    ("a > 1", '"a" > :t1', {"t1": 1.0}),
    (
        "a >= -2.5 && b < 3 && c <= 0",
        '("a" >= :t1 AND "b" < :t2 AND "c" <= :t3)',
        {"t1": -2.5, "t2": 3.0, "t3": 0.0},
    ),
    (
        "a < 1 || b >= 2 && c <= 3",
        '("a" < :t1 OR "b" >= :t2 AND "c" <= :t3)',
        {"t1": 1.0, "t2": 2.0, "t3": 3.0},
    ),
    (
        "(a > 1 || b < 2) && c ~ 1",
        '(("a" > :t1 OR "b" < :t2) AND "c" LIKE :l4 ESCAPE \'\\\')',
        {"t1": 1.0, "t2": 2.0, "l4": "%1%"},
    ),
    ("j.x = 1", "JSON_EXTRACT(\"j\", '$.x') IS :t1", {"t1": 1.0}),
    ("j.x.0 != null", "JSON_EXTRACT(\"j\", '$.x[0]') IS NOT NULL", {}),
    ("a ~ b", "\"a\" LIKE ('%' || \"b\" || '%') ESCAPE '\\'", {}),
    ("a !~ b", "\"a\" NOT LIKE ('%' || \"b\" || '%') ESCAPE '\\'", {}),
    ("'x' ~ a", ":t1 LIKE ('%' || \"a\" || '%') ESCAPE '\\'", {"t1": "x"}),
    ("a ~ 'x'", "\"a\" LIKE :l2 ESCAPE '\\'", {"l2": "%x%"}),
    ("a !~ 'a_b'", "\"a\" NOT LIKE :l2 ESCAPE '\\'", {"l2": "%a\\_b%"}),
    ("a ~ '50%'", "\"a\" LIKE :l2 ESCAPE '\\'", {"l2": "50%"}),
    ("a ~ 5", "\"a\" LIKE :l2 ESCAPE '\\'", {"l2": "%5%"}),
    ("a ?= 1 || a ?!= 2", '("a" = :t1 OR "a" IS NOT :t2)', {"t1": 1.0, "t2": 2.0}),
    (
        "a ?~ 'x' && a ?!~ 'y'",
        "(\"a\" LIKE :l2 ESCAPE '\\' AND \"a\" NOT LIKE :l4 ESCAPE '\\')",
        {"l2": "%x%", "l4": "%y%"},
    ),
    (
        "a ?> 1 && a ?>= 1 && a ?< 1 && a ?<= 1",
        '("a" > :t1 AND "a" >= :t2 AND "a" < :t3 AND "a" <= :t4)',
        {"t1": 1.0, "t2": 1.0, "t3": 1.0, "t4": 1.0},
    ),
    ("a = @now", '"a" = :t1', {"t1": "2024-02-29 13:14:15.678Z"}),
    (
        "a > @todayStart && a < @todayEnd && a >= @monthStart && a <= @monthEnd",
        '("a" > :t1 AND "a" < :t2 AND "a" >= :t3 AND "a" <= :t4)',
        {
            "t1": "2024-02-29 00:00:00.000Z",
            "t2": "2024-02-29 23:59:59.999Z",
            "t3": "2024-02-01 00:00:00.000Z",
            "t4": "2024-02-29 23:59:59.999Z",
        },
    ),
    (
        "a > @yearStart && a < @yearEnd && a != @yesterday && a != @tomorrow",
        '("a" > :t1 AND "a" < :t2 AND "a" IS NOT :t3 AND "a" IS NOT :t4)',
        {
            "t1": "2024-01-01 00:00:00.000Z",
            "t2": "2024-12-31 23:59:59.999Z",
            "t3": "2024-02-28 13:14:15.678Z",
            "t4": "2024-03-01 13:14:15.678Z",
        },
    ),
    (
        "a = @second || a = @minute || a = @hour || a = @day || a = @month || a = @year"
        " || a = @weekday",
        '("a" = :t1 OR "a" = :t2 OR "a" = :t3 OR "a" = :t4 OR "a" = :t5 OR "a" = :t6 OR "a" = :t7)',
        {"t1": 15, "t2": 14, "t3": 13, "t4": 29, "t5": 2, "t6": 2024, "t7": 4},
    ),
    ("strftime('%Y') = a", "COALESCE(strftime(:t1), '') = COALESCE(\"a\", '')", {"t1": "%Y"}),
    (
        "strftime('%Y', a, 'start of day', 'utc') = '2024'",
        'strftime(:t1,"a",:t2,:t3) = :t4',
        {"t1": "%Y", "t2": "start of day", "t3": "utc", "t4": "2024"},
    ),
    (
        "geoDistance(a, b, 1, 2) < 3",
        '(6371 * acos(cos(radians("b")) * cos(radians(:t2)) * cos(radians(:t1) - radians("a"))'
        ' + sin(radians("b")) * sin(radians(:t2)))) < :t3',
        {"t1": 1.0, "t2": 2.0, "t3": 3.0},
    ),
    (
        "geoDistance(a, b, 1, 2) = null",
        '(6371 * acos(cos(radians("b")) * cos(radians(:t2)) * cos(radians(:t1) - radians("a"))'
        ' + sin(radians("b")) * sin(radians(:t2)))) IS NULL',
        {"t1": 1.0, "t2": 2.0},
    ),
    # a number that overflows a float64 is 0, as Go's cast.ToFloat64 makes it
    ("a = 1" + "0" * 400, '"a" = :t1', {"t1": 0.0}),
]


@pytest.mark.parametrize(("text", "sql", "params"), CASES)
def test_compile(text: str, sql: str, params: dict[str, Any]) -> None:
    assert compile_simple(text) == (sql, params)


LIKE_VALUES = [
    ("abc", "%abc%"),
    ("ab%c", "ab%c"),
    ("ab\\%c", "%ab\\%c%"),
    ("%ab\\%c", "%ab\\%c"),
    ("ab\\\\%c", "ab\\\\%c"),
    ("ab\\\\\\%c", "%ab\\\\\\%c%"),
    ("ab_c", "%ab\\_c%"),
    ("ab\\_c", "%ab\\_c%"),
    ("%ab_c", "%ab_c"),
    ("ab\\c", "%ab\\\\c%"),
    ("_ab\\c_", "%\\_ab\\\\c\\_%"),
    ("ab\\c%", "ab\\c%"),
    ("a\nb\\", "%a\nb\\\\%"),
    ("", "%%"),
]


@pytest.mark.parametrize(("value", "pattern"), LIKE_VALUES)
def test_like_wrapping(value: str, pattern: str) -> None:
    """The table of PocketBase's `TestLikeParamsWrapping`."""
    assert wrap_like_value(value) == pattern


def test_like_semantics_in_sqlite() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a TEXT, b TEXT, c TEXT)")
    values = ["100% sure", "100 sure", "a_b", "axb", "back\\slash", "HELLO", None, ""]
    conn.executemany("INSERT INTO t (a) VALUES (?)", [(v,) for v in values])

    def matches(text: str) -> list[str | None]:
        expr = build_filter(text, simple())
        return [r[0] for r in conn.execute(f"SELECT a FROM t WHERE {expr.sql}", expr.params)]

    assert matches("a ~ '100%'") == ["100% sure", "100 sure"]  # explicit %: a pattern as is
    assert matches("a ~ '0% s'") == []  # ... so it is anchored at both ends
    assert matches("a ~ '0\\\\% s'") == ["100% sure"]  # escaped %: literal
    assert matches("a ~ 'a_b'") == ["a_b"]  # _ is literal when wrapped
    assert matches("a ~ 'hello'") == ["HELLO"]  # case-insensitive for ASCII
    assert matches("a ~ '\\\\'") == ["back\\slash"]
    assert matches("a !~ 'e'") == ["a_b", "axb", "back\\slash", ""]  # NULL never matches


def test_equality_treats_null_as_empty_in_sqlite() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER, a TEXT, b TEXT)")
    conn.executemany(
        "INSERT INTO t VALUES (?, ?, ?)",
        [(1, None, ""), (2, "", "x"), (3, "x", "x"), (4, "y", None)],
    )

    def ids(text: str) -> list[int]:
        expr = build_filter(text, simple())
        return [r[0] for r in conn.execute(f"SELECT id FROM t WHERE {expr.sql}", expr.params)]

    assert ids("a = ''") == [1, 2]
    assert ids("a = null") == [1, 2]
    assert ids("a != ''") == [3, 4]
    assert ids("a = b") == [1, 3]
    assert ids("a != b") == [2, 4]
    assert ids("a != 'x'") == [1, 2, 4]


class ManyResolver:
    """`vals:each` stands for every item of `t.vals` (a JSON array): a real multi-match
    resolver over `t(id, name, vals)`, as the record resolver builds them."""

    def __init__(self) -> None:
        self.names = Names()
        self.joins: list[Join] = []

    def resolve(self, field: str) -> ResolverResult:
        if field == "name":
            return ResolverResult('"t"."name"')
        if field != "vals:each":
            raise FilterError(f"unknown {field}")
        self.joins = [Join(json_each("t.vals"), "je")]
        mm = MultiMatchSubquery(
            target_table_alias="t",
            from_table_name="t",
            from_table_alias="__mm_t",
            value_identifier='"__mm_je"."value"',
            joins=[Join(json_each("__mm_t.vals"), "__mm_je")],
        )
        return ResolverResult('"je"."value"', multi_match=mm)

    def update_query(self, query: SelectQueryLike) -> None:
        if self.joins:
            query.distinct = True
            for join in self.joins:
                query.left_join(join)


@pytest.fixture
def many_db() -> sqlite3.Connection:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, vals JSON)")
    rows = [(1, "a", "[1, 2, 3]"), (2, "b", "[5, 6]"), (3, "c", "[]"), (4, "5", "[5]")]
    conn.executemany("INSERT INTO t VALUES (?, ?, ?)", rows)
    return conn


def run_many(conn: sqlite3.Connection, text: str) -> list[int]:
    resolver = ManyResolver()
    query = SelectQuery("t")
    query.and_where(build_filter(text, resolver))
    resolver.update_query(query)
    query.and_order_by('"t"."id"')
    expr = query.build('"t"."id"')
    return [r[0] for r in conn.execute(expr.sql, expr.params)]


MANY_CASES = [
    ("vals:each > 2", [2, 4]),  # every item > 2 (an empty array has a NULL row: no match)
    ("vals:each ?> 2", [1, 2, 4]),  # at least one item > 2
    ("vals:each = 5", [4]),
    ("vals:each ?= 5", [2, 4]),
    ("vals:each != 5", [1, 3]),
    ("vals:each ?!= 5", [1, 2, 3]),
    ("5 = vals:each", [4]),
    ("vals:each = name", []),  # the JSON integer 5 is not the text '5' (no affinity)
    ("vals:each = vals:each", [3, 4]),  # many vs many: every pair equal ('' = '' for [])
    ("vals:each ?= vals:each", [1, 2, 3, 4]),
]


@pytest.mark.parametrize(("text", "ids"), MANY_CASES)
def test_multi_match_semantics(many_db: sqlite3.Connection, text: str, ids: list[int]) -> None:
    assert run_many(many_db, text) == ids


def test_multi_match_sql_shape() -> None:
    expr = build_filter("vals:each > 2", ManyResolver())
    subquery = (
        'SELECT "__mm_je"."value" AS "multiMatchValue" FROM "t" "__mm_t" LEFT JOIN '
        + json_each("__mm_t.vals")
        + ' "__mm_je" WHERE "__mm_t"."id" = "t"."id"'
    )
    assert expr.sql == (
        '((("je"."value" > :t1) AND (NOT EXISTS (SELECT 1 FROM ('
        + subquery
        + ') "__sm2" WHERE NOT ("__sm2"."multiMatchValue" > :t1)))))'
    )
    assert dict(expr.params) == {"t1": 2.0}


ERRORS = [
    "unknown = 1",
    "a = unknown",
    "j = 1",  # only j.<path> is allowed
    "a = 'x' && unknown > 1",
    "nope(1) = 1",
    "geoDistance(1, 2, 3) < 1",
    "geoDistance(1, 2, 3, 'x') < 1",
    "geoDistance(1, 2, 3, unknown) < 1",
    "strftime() = 1",
    "strftime(a) = 1",
    "strftime('%Y', 'a', 1) = 1",
    "strftime('%Y', 'a', '1', '2', '3', '4', '5', '6', '7', '8', '9') = 1",
    "a = 1 &&",
]


@pytest.mark.parametrize("text", ERRORS)
def test_errors(text: str) -> None:
    with pytest.raises(FilterError):
        build_filter(text, simple())


def test_limits() -> None:
    build_filter(" || ".join(["a = 1"] * 200), simple())
    with pytest.raises(FilterError):
        build_filter(" || ".join(["a = 1"] * 201), simple())
    with pytest.raises(FilterError):
        build_filter("(a=1 || a=1) && (a=1 || (a=1 || a=1))", simple(), max_expressions=4)
    with pytest.raises(FilterError):
        build_filter("a = '" + "x" * 10 + "'", simple(), max_length=10)


def test_placeholders() -> None:
    expr = build_filter(
        "a = {:a} || b = {:b} || c = {:c} || a = {:d} || b = {:e} || c = {:f}",
        simple(),
        placeholders={
            "a": 'it\'s "q" \\ \n',
            "b": None,
            "c": True,
            "d": 1.5,
            "e": [1, "x"],
            "f": 3,
        },
    )
    assert dict(expr.params) == {"t1": 'it\'s "q" \\ \n', "t2": 1.5, "t3": '[1,"x"]', "t4": 3.0}
    assert expr.sql == (
        '("a" = :t1 OR ("b" = \'\' OR "b" IS NULL) OR "c" = 1 OR "a" = :t2 OR "b" = :t3'
        ' OR "c" = :t4)'
    )
    assert replace_placeholders("x = {:x}", {"x": 'a"b'}) == 'x = "a\\"b"'


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (5.0, "5"),
        (1.5, "1.5"),
        (-0.0, "-0"),
        (1e21, "1000000000000000000000"),
        (1.5e-7, "0.00000015"),
        (True, "true"),
        (None, ""),
        ("s", "s"),
        (7, "7"),
    ],
)
def test_go_string(value: object, text: str) -> None:
    assert go_string(value) == text


def test_sort() -> None:
    assert parse_sort("-a, +b,c,@random,-@rowid") == [
        SortField("a", "DESC"),
        SortField("b", "ASC"),
        SortField("c", "ASC"),
        SortField("@random", "ASC"),
        SortField("@rowid", "DESC"),
    ]
    resolver = simple()
    assert build_sort("-a,+b,j.x,@random,-@rowid", resolver, "t") == [
        '"a" DESC',
        '"b" ASC',
        "JSON_EXTRACT(\"j\", '$.x') ASC",
        "RANDOM()",
        '"t"."_rowid_" DESC',
    ]
    assert build_sort("", resolver, "t") == []
    for bad in ["a,", "unknown", "-", "a,b,c,a,b,c,a,b,c", "x" * 300]:
        with pytest.raises(FilterError):
            build_sort(bad, SimpleFieldResolver("a", "b", "c", "x" * 300), "t")


def test_select_query() -> None:
    query = SelectQuery("t")
    query.and_where(build_filter("a = 'x'", simple()))
    query.left_join(Join(quote("u"), "u1"))
    query.left_join(Join(quote("u"), "u1", None))
    query.distinct = True
    query.and_order_by('"a" ASC')
    page = query.build(limit=10, offset=20)
    assert page.sql == (
        'SELECT DISTINCT "t".* FROM "t" LEFT JOIN "u" "u1" WHERE "a" = :t1 ORDER BY "a" ASC'
        " LIMIT :__limit OFFSET :__offset"
    )
    assert dict(page.params) == {"t1": "x", "__limit": 10, "__offset": 20}
    count = query.build_count("_rowid_")
    assert count.sql == (
        'SELECT COUNT(DISTINCT "t"."_rowid_") FROM "t" LEFT JOIN "u" "u1" WHERE "a" = :t1'
    )


def test_simple_resolver_patterns() -> None:
    resolver = SimpleFieldResolver("id", r"^data\.\w+$", "^bad[$")
    assert resolver.resolve("id").identifier == '"id"'
    assert resolver.resolve("data.x").identifier == "JSON_EXTRACT(\"data\", '$.x')"
    for name in ["data", "data.x.y", "idx", "data.é", "bad[", "ID"]:
        with pytest.raises(FilterError):
            resolver.resolve(name)
