"""`core.views`: the fields PocketBase 0.40 gives a view query's columns (copies of collection
fields with their flags, relations for `id` columns, numbers for `count`/`total`, the cast
types, json for the rest), the errors of its dry run, and what a view collection's create keeps
when the query fails. On a real `App` (its SQLite database and system collections)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from instance_runtime.core import collections
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.models import Collection, crc32_checksum
from instance_runtime.core.schema import Schema
from instance_runtime.core.views import (
    MissingIdError,
    ViewQueryError,
    create_view_fields,
    dry_run,
    infer_view,
    query_fields,
)

T = TypeVar("T")

POSTS = {
    "name": "posts",
    "fields": [
        {"name": "title", "type": "text", "required": True, "presentable": True, "max": 50},
        {"name": "n", "type": "number", "onlyInt": True},
        {"name": "flag", "type": "bool"},
        {"name": "doc", "type": "file", "maxSelect": 1},
        {"name": "secret", "type": "text", "hidden": True},
    ],
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    runtime = App(tmp_path_factory.mktemp("views") / "pb_data", readers=1)

    def setup(conn: sqlite3.Connection, schema: Schema) -> None:
        collections.create(conn, schema, POSTS, hooks=runtime.hooks)
        conn.execute("INSERT INTO posts (id, title, n) VALUES ('p1', 'a', 2), ('p2', 'b', 2)")

    try:
        runtime.write_sync(setup)
        yield runtime
    finally:
        runtime.close()


def _in_write(app: App, fn: Callable[[sqlite3.Connection, Schema], T]) -> T:
    return app.write_sync(lambda conn, _old: fn(conn, Schema.load(conn)))


def _fields(app: App, query: str) -> list[dict[str, Any]]:
    found = _in_write(app, lambda conn, schema: create_view_fields(conn, schema, query))
    return [f.to_json() for f in found]


def _field(app: App, query: str, name: str) -> dict[str, Any]:
    return next(f for f in _fields(app, query) if f["name"] == name)


def _only(field: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: field.get(k) for k in keys}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("count(*)", {"type": "number", "onlyInt": True}),
        ("COUNT( n )", {"type": "number", "onlyInt": True}),
        ("total(n)", {"type": "number", "onlyInt": False}),
        ("sum(n)", {"type": "json", "maxSize": 1}),  # PocketBase knows count and total only
        ("avg(n)", {"type": "json", "maxSize": 1}),
        ("length(title)", {"type": "json", "maxSize": 1}),
        ("cast(n as real)", {"type": "number", "onlyInt": False}),
        ("CAST( n AS  NUMERIC )", {"type": "number", "onlyInt": False}),
        ("cast(n as decimal)", {"type": "number", "onlyInt": False}),
        ("cast(n as int)", {"type": "number", "onlyInt": True}),
        ("cast(n as integer)", {"type": "number", "onlyInt": True}),
        ("cast(n as text)", {"type": "text", "primaryKey": False, "max": 0}),
        ("cast(flag as boolean)", {"type": "bool"}),
        ("cast(flag as bool)", {"type": "bool"}),
        ("cast(cast(n as text) as real)", {"type": "number", "onlyInt": False}),
        ("cast(n as varchar)", {"type": "json", "maxSize": 1}),
        ("json_extract(title, '$')", {"type": "json", "maxSize": 1}),
    ],
)
def test_expressions(app: App, expression: str, expected: dict[str, Any]) -> None:
    field = _field(app, f"select id, {expression} as x from posts group by id", "x")
    assert _only(field, *expected) == expected
    assert (field["system"], field["required"], field["hidden"]) == (False, False, False)


def test_copies_keep_the_source_fields_flags(app: App) -> None:
    query = (
        "select p.id, p.title as t, p.secret, u.email, u.tokenKey, u.verified "
        "from posts p join users u on u.id = p.id"
    )
    fields = {f["name"]: f for f in _fields(app, query)}
    users = _in_write(app, lambda _c, schema: schema.find("users"))
    assert users is not None
    for name, source in (("email", "email"), ("tokenKey", "tokenKey"), ("verified", "verified")):
        original = users.field(source)
        assert original is not None
        assert {**fields[name], "id": original.id} == original.to_json()
        assert fields[name]["id"].startswith("_clone_") and len(fields[name]["id"]) == 11
    assert fields["email"]["system"] is True and fields["tokenKey"]["hidden"] is True
    assert _only(fields["t"], "type", "required", "presentable", "max") == {
        "type": "text",
        "required": True,
        "presentable": True,
        "max": 50,
    }
    assert fields["secret"]["hidden"] is True
    assert _only(fields["id"], "system", "primaryKey", "pattern", "id") == {
        "system": True,
        "primaryKey": True,
        "pattern": "^[a-z0-9]+$",
        "id": "text3208210256",
    }


def test_id_columns_are_relations(app: App) -> None:
    schema = _in_write(app, lambda _c, s: s)
    posts, users = schema.find("posts"), schema.find("users")
    assert posts is not None and users is not None
    query = "select p.id, u.id as uid, p.id as pid from posts p join users u on u.id = p.id"
    fields = {f["name"]: f for f in _fields(app, query)}
    for name, target in (("uid", users), ("pid", posts)):
        assert _only(fields[name], "type", "collectionId", "maxSelect", "minSelect", "id") == {
            "type": "relation",
            "collectionId": target.id,
            "maxSelect": 1,
            "minSelect": 0,
            "id": "relation" + crc32_checksum(name),
        }


@pytest.mark.parametrize(
    ("query", "name", "expected_type"),
    [
        ("select id, TITLE from posts", "TITLE", "text"),  # field names match case-insensitively
        ("select id, title from Posts", "title", "json"),  # table names exactly
        ("with x as (select id, title from posts) select id, title from x", "title", "json"),
        ("select s.id, s.title from (select id, title from posts) s", "title", "json"),
        ("select id, (select title from posts limit 1) as t from posts", "t", "json"),
        ("select id, nope from (select id, 1 as nope from posts)", "nope", "json"),
        ("select vd.id, vd.doc from posts vd", "doc", "file"),
    ],
)
def test_which_columns_are_copies(app: App, query: str, name: str, expected_type: str) -> None:
    assert _field(app, query, name)["type"] == expected_type


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("select * from posts", r"^wildcard columns \(\*\) are not supported - manually"),
        ("select id, posts.* from posts", r"^wildcard columns \(\*\) are not supported"),
        ("select id, n + 1 as m from posts", r"^invalid identifier parts \[n \+ 1 as m\]$"),
        ("select id, nope from posts", r"^SQL logic error: no such column: nope \(1\)$"),
        ("select id from posts -- the end", r"^SQL logic error: incomplete input \(1\)$"),
    ],
)
def test_view_fields_errors(app: App, query: str, message: str) -> None:
    with pytest.raises(ViewQueryError, match=message):
        _fields(app, query)


def test_a_missing_id_keeps_the_other_fields(app: App) -> None:
    with pytest.raises(MissingIdError, match=r"^missing required id column") as caught:
        _fields(app, "SELECT ID, Title FROM posts")  # `ID` is not `id`
    assert [(f.name, f.type) for f in caught.value.fields] == [
        ("ID", "relation"),
        ("Title", "text"),
    ]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("select id, title, title from posts", r'^invalid field "title:1" \(2\): name: must be in'),
        ("select id, count(*) from posts", r'invalid field "count\(\*\)" \(1\): name: must be'),
        ("select id, title as expand from posts", r"\(1\): name: must not be in list\.$"),
        ("select id, title as a_via_b from posts", 'name: The value cannot contain "_via_"..$'),
        (f"select id, n as {'x' * 101} from posts", "name: the length must be between 1 and 100.$"),
        ("select n as id from posts", "^the query could return records with non-unique ids$"),
        ("select '' as id", "^the query could return records with empty or invalid ids$"),
        ("select 1 as id; select 2 as id", "^multiple statements are not supported$"),
    ],
)
def test_dry_run_errors(app: App, query: str, message: str) -> None:
    with pytest.raises(ViewQueryError, match=message):
        _in_write(app, lambda conn, schema: dry_run(conn, schema, query))


def test_a_dry_run_samples_with_text_ids(app: App) -> None:
    query = "select (ROW_NUMBER() OVER(order by id)) as id, (avg(n) over ()) as a from posts"
    temp, records = _in_write(app, lambda conn, schema: dry_run(conn, schema, query, 1))
    assert temp.name.startswith("temp_view_") and [f.name for f in temp.fields] == ["id", "a"]
    assert records == [{"id": "1", "a": 2}]  # the id cast to text, 2.0 written as Go writes it


def _infer(app: App, query: str) -> tuple[list[str], str | None]:
    def run(conn: sqlite3.Connection, schema: Schema) -> tuple[list[str], str | None]:
        coll = Collection(name="v", type="view")
        coll.options["viewQuery"] = query
        problem = infer_view(conn, schema, coll)
        return [f.name for f in coll.fields], problem.message if problem else None

    return _in_write(app, run)


def test_infer_view(app: App) -> None:
    assert _infer(app, "select id, title from posts") == (["id", "title"], None)
    assert _infer(app, "select title from posts") == (
        ["title"],
        "Invalid query - missing required id column (you can use `(ROW_NUMBER() OVER()) as id` "
        "if you don't have one).",
    )
    assert _infer(app, "select id, n + 1 as m from posts") == (
        [],
        "Invalid query - invalid identifier parts [n + 1 as m].",
    )
    fields, problem = _infer(app, "select id, title t, title t from posts")
    assert fields == ["id", "t", "t:1"]
    assert problem == 'Invalid query - invalid field "t:1" (2): name: must be in a valid format.'


def test_query_fields_maps_aliases(app: App) -> None:
    found = _in_write(
        app, lambda _c, schema: query_fields(schema, "select id, doc as d, count(*) c from posts")
    )
    assert {k: (v.field.type, v.original) for k, v in found.items()} == {
        "id": ("text", None),
        "d": ("file", "doc"),
        "c": ("number", None),
    }
    assert found["d"].collection is not None and found["d"].collection.name == "posts"


def test_updating_a_view_of_system_fields(app: App) -> None:
    data = {"name": "v_users", "type": "view", "viewQuery": "select id, email from users"}

    def create(conn: sqlite3.Connection, schema: Schema) -> Collection:
        return collections.create(conn, schema, data, hooks=app.hooks)

    created = _in_write(app, create)

    def update(conn: sqlite3.Connection, schema: Schema) -> Collection:
        return collections.update(conn, schema, created, {"listRule": ""}, hooks=app.hooks)

    updated = _in_write(app, update)  # the system copy's new id is no "deleted system field"
    before, after = created.field("email"), updated.field("email")
    assert before is not None and after is not None and before.system and after.system
    assert before.id != after.id  # PocketBase copies the fields afresh on every save

    def broken(conn: sqlite3.Connection, schema: Schema) -> Collection:
        return collections.update(conn, schema, updated, {"viewQuery": "select 1"}, hooks=app.hooks)

    with pytest.raises(ApiError) as caught:
        _in_write(app, broken)
    assert caught.value.to_json()["data"]["fields"]["code"] == "validation_missing_primary_key"
