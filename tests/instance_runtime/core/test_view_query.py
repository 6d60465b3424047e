"""`core.view_query`: PocketBase's reading of a view query (its `identifiersParser`: columns and
tables with their aliases, what it refuses and how it says so), the one-statement check, and
the view as PocketBase stores it (`SELECT * FROM (...)`, a non-text `id` cast to TEXT)."""

from __future__ import annotations

import sqlite3

import pytest

from instance_runtime.core.view_query import (
    Identifier,
    ViewQueryError,
    normalize_view_query_id,
    normalize_view_select_query,
    parse_identifiers,
    query_table_info,
    save_view,
)


def _pairs(items: list[Identifier]) -> list[tuple[str, str]]:
    return [(i.original, i.alias) for i in items]


@pytest.mark.parametrize(
    ("query", "columns", "tables"),
    [
        ("select id, title from posts", [("id", "id"), ("title", "title")], [("posts", "posts")]),
        (
            "SELECT DISTINCT p.id, p.title AS t, u.email e FROM posts p "
            "LEFT OUTER JOIN users as u ON u.id = p.author WHERE p.n > 1",
            [("p.id", "id"), ("p.title", "t"), ("u.email", "e")],
            [("posts", "p"), ("users", "u")],
        ),
        (  # comments go, quotes are trimmed from each dotted part, `'` only from aliases
            'select "id", `p`.[title] as \'tt\' /* a, b */ -- c, d\n from "posts" p;',
            [("id", "id"), ("p.title", "tt")],
            [("posts", "p")],
        ),
        (  # what the CTE reads is inside parentheses: only the outer SELECT counts
            "with x as (select id, title from posts) select id, title from x",
            [("id", "id"), ("title", "title")],
            [("x", "x")],
        ),
        (  # a subquery is one item; the alias of a dotted column is its last part
            "select s.id, count(*) as c, json_extract(data, '$.a') from (select 1 as id) s",
            [("s.id", "id"), ("count(*)", "c"), ("json_extract(data, '$.a')", "a')")],
            [("(select 1 as id)", "s")],
        ),
        (
            "select p.id, u.name from posts p join users u on u.id = p.a join tags t on 1",
            [("p.id", "id"), ("u.name", "name")],
            [("posts", "p"), ("users", "u"), ("tags", "t")],
        ),
    ],
)  # fmt: skip
def test_columns_and_tables(
    query: str, columns: list[tuple[str, str]], tables: list[tuple[str, str]]
) -> None:
    parsed = parse_identifiers(query)
    assert (_pairs(parsed.columns), _pairs(parsed.tables)) == (columns, tables)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("select id, n + 1 as m from posts", "invalid identifier parts [n + 1 as m]"),
        (
            "select id, case when a then 1 else 0 end as x from posts",
            "invalid identifier parts [case when a then 1 else 0 end as x]",
        ),
        (  # the SELECTs of a UNION run together, and so do its FROMs
            "select id, title from posts union select id, email from users",
            'invalid identifier part - expected "as", got union',
        ),
        (
            "select id, title as x from posts union all select id, name as x from users",
            "invalid identifier parts [title as x id]",
        ),
        (
            "select id, 'a\nb\"c from posts where x",  # as Go's %q writes it
            "unbalanced parenthesis or quoted expression: "
            "\"'a\\nb\\\"c from posts __pb_discard__ x\"",
        ),
    ],
)  # fmt: skip
def test_what_the_parser_refuses(query: str, message: str) -> None:
    with pytest.raises(ViewQueryError) as caught:
        parse_identifiers(query)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("query", "normalized"),
    [
        ("  select 1 as id;; ", "select 1 as id"),
        ("select ';' as id", "select ';' as id"),
        ("select 1 as id /* ; */", None),  # the tokenizer knows no comments
        ("select 1 as id; select 2 as id", None),
    ],
)
def test_one_statement(query: str, normalized: str | None) -> None:
    if normalized is None:
        with pytest.raises(ViewQueryError, match=r"^multiple statements are not supported$"):
            normalize_view_select_query(query)
    else:
        assert normalize_view_select_query(query) == normalized


@pytest.fixture
def conn() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE posts (id TEXT PRIMARY KEY, title TEXT, n NUMERIC)")
    db.execute("INSERT INTO posts VALUES ('p1', 'a', 2), ('p2', 'b', 5)")
    return db


def test_the_table_info_is_of_the_wrapped_query_and_leaves_nothing(
    conn: sqlite3.Connection,
) -> None:
    info = query_table_info(conn, "select id, TITLE, title from posts")
    assert [(r["name"], r["type"]) for r in info] == [
        ("id", "TEXT"),
        ("TITLE", "TEXT"),
        ("title:1", "TEXT"),
    ]
    assert conn.execute("select count(*) from sqlite_master where type = 'view'").fetchone() == (0,)
    with pytest.raises(sqlite3.OperationalError, match="incomplete input"):
        query_table_info(conn, "select id from posts -- a trailing comment")


def test_a_non_text_id_is_cast(conn: sqlite3.Connection) -> None:
    assert normalize_view_query_id(conn, "select id, n from posts;") == "select id, n from posts"
    wrapped = normalize_view_query_id(conn, "select n as id, title t from posts")
    assert wrapped == "SELECT CAST(`id` as TEXT) `id`,`t` FROM (select n as id, title t from posts)"
    save_view(conn, "v", "select n as id, title as t from posts order by n")
    assert conn.execute("select id, t from v").fetchall() == [("2", "a"), ("5", "b")]
    sql = conn.execute("select sql from sqlite_master where name = 'v'").fetchone()[0]
    assert sql.startswith('CREATE VIEW "v" AS SELECT * FROM (SELECT CAST(`id` as TEXT)')
