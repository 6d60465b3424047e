"""`tools/dbutils.parse_index` on PocketBase's own scenarios (tools/dbutils/index_test.go)."""

from __future__ import annotations

from instance_runtime.tools.dbutils import Index, IndexColumn, parse_index


def test_an_invalid_expression_parses_to_an_empty_index() -> None:
    assert parse_index("invalid") == Index()
    assert not parse_index("invalid").is_valid()


def test_a_simple_index() -> None:
    for expr in (
        "create index indexname on tablename   (col1)",
        "create index indexname on tablename(col1)",
    ):
        assert parse_index(expr) == Index(
            index_name="indexname", table_name="tablename", columns=[IndexColumn("col1")]
        )


def test_every_part_of_an_index() -> None:
    expr = """CREATE UNIQUE INDEX IF NOT EXISTS "schemaname".[indexname] on 'tablename' (
        col0,
        `col1`,
        json_extract("col2", "$.a") asc,
        "col3" collate NOCASE,
        "col4" collate RTRIM desc
    ) where test = 1"""
    assert parse_index(expr) == Index(
        unique=True,
        optional=True,
        schema_name="schemaname",
        index_name="indexname",
        table_name="tablename",
        columns=[
            IndexColumn("col0"),
            IndexColumn("col1"),
            IndexColumn('json_extract("col2", "$.a")', "", "ASC"),
            IndexColumn("col3", "NOCASE", ""),
            IndexColumn("col4", "RTRIM", "DESC"),
        ],
        where="test = 1",
    )


def test_unbalanced_columns_give_no_columns() -> None:
    parsed = parse_index("create index idx on t (a, 'b)")  # a quote left open
    assert parsed.columns == []
    assert not parsed.is_valid()
