"""`POST /api/sql` of a real runtime process: superusers only (PocketBase's 401/403), PocketBase's
400s for bad bodies and queries, reads on readers and writes in one transaction of the writer,
and what a tenant's superuser may not do there (attach files, VACUUM INTO, transaction control,
PRAGMA assignments, temporary objects) with the runtime still working as before afterwards.
(Side by side with PocketBase: tests/conformance/test_conformance_collections_meta.py.)"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess

USER_EMAIL, USER_PASSWORD = "sql-user@example.com", "sql-user-pass-1"
NOT_AUTHORIZED = "Failed to execute query. Raw error:\nSQL logic error: not authorized (1)."


@pytest.fixture(scope="module")
def su(runtime: RuntimeProcess) -> Iterator[httpx.Client]:
    with runtime.client(superuser=True) as client:
        yield client


@pytest.fixture(scope="module")
def user(runtime: RuntimeProcess, su: httpx.Client) -> Iterator[httpx.Client]:
    created = su.post(
        "/api/collections/users/records",
        json={"email": USER_EMAIL, "password": USER_PASSWORD, "passwordConfirm": USER_PASSWORD},
    )
    assert created.status_code == 200, created.text
    auth = runtime.client().post(
        "/api/collections/users/auth-with-password",
        json={"identity": USER_EMAIL, "password": USER_PASSWORD},
    )
    assert auth.status_code == 200, auth.text
    with runtime.client(token=auth.json()["token"]) as client:
        yield client


def sql(client: httpx.Client, query: str) -> httpx.Response:
    return client.post("/api/sql", json={"query": query})


def ok(client: httpx.Client, query: str) -> dict[str, Any]:
    response = sql(client, query)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body.pop("execTime"), int)
    return body


def failure(client: httpx.Client, query: str) -> str:
    response = sql(client, query)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["data"] == {} and body["status"] == 400
    message: str = body["message"]
    return message


def refused(client: httpx.Client, query: str) -> None:
    assert failure(client, query) == NOT_AUTHORIZED


def test_guests_and_users_are_refused(runtime: RuntimeProcess, user: httpx.Client) -> None:
    with runtime.client() as guest:
        response = sql(guest, "select 1")
    assert response.status_code == 401
    assert response.json() == {
        "data": {},
        "message": "The request requires valid record authorization token.",
        "status": 401,
    }
    response = sql(user, "select 1")
    assert response.status_code == 403
    assert response.json()["message"] == (
        "The authorized record is not allowed to perform this action."
    )


@pytest.mark.parametrize(
    ("content", "ctype"),
    [
        ("{nope", "application/json"),
        ("[1]", "application/json"),
        ('{"query": 5}', "application/json"),
    ],
)
def test_unreadable_bodies(su: httpx.Client, content: str, ctype: str) -> None:
    response = su.post("/api/sql", content=content, headers={"content-type": ctype})
    assert response.status_code == 400
    assert response.json() == {
        "data": {},
        "message": "An error occurred while loading the submitted data.",
        "status": 400,
    }


def test_validation(su: httpx.Client) -> None:
    for body in ({}, {"query": None}, {"query": ""}):
        response = su.post("/api/sql", json=body)
        assert response.status_code == 400
        assert response.json()["data"] == {
            "query": {"code": "validation_required", "message": "Cannot be blank."}
        }
    response = sql(su, "select '" + "a" * 4992 + "'")
    assert response.status_code == 400
    assert response.json()["data"]["query"] == {
        "code": "validation_length_too_long",
        "message": "The length must be no more than 5000.",
        "params": {"max": 5000, "min": 0},
    }
    assert ok(su, "select '" + "a" * 4985 + "' as x")["rows"] == [["a" * 4985]]
    assert failure(su, "   ") == "Failed to execute query. Raw error:\nempty query."
    assert failure(su, "nonsense") == (
        'Failed to execute query. Raw error:\nSQL logic error: near "nonsense": syntax error (1).'
    )


def test_a_form_body(su: httpx.Client) -> None:
    response = su.post("/api/sql", data={"query": "select 7 as seven"})
    assert response.status_code == 200, response.text
    assert response.json()["rows"] == [["7"]]


def test_reads_writes_and_their_results(su: httpx.Client) -> None:
    created = ok(
        su,
        "create table api_sql_t (id integer primary key, label TEXT NOT NULL, at DATETIME);"
        "insert into api_sql_t (label, at) values ('a', '2024-01-02 03:04:05'), ('b', 'x')",
    )
    assert created == {"affectedRows": 2, "columns": [], "rows": []}
    listed = ok(su, "select label, at, id * 1.5 as f from api_sql_t order by id")
    assert listed["columns"] == [
        {"name": "label", "type": "TEXT", "nullable": True},
        {"name": "at", "type": "DATETIME", "nullable": True},
        {"name": "f", "type": "", "nullable": True},
    ]
    assert listed["rows"] == [["a", "2024-01-02T03:04:05Z", "1.5"], ["b", "x", "3"]]
    assert ok(su, "select 1; select count(*) as n from api_sql_t")["rows"] == [["2"]]
    # a write: no rows even when its last statement is a SELECT
    assert ok(su, "update api_sql_t set label = label; select 1") == {
        "affectedRows": 2,
        "columns": [],
        "rows": [],
    }
    # all or nothing
    assert "syntax error" in failure(su, "insert into api_sql_t (label) values ('c'); nonsense")
    assert ok(su, "select count(*) from api_sql_t")["rows"] == [["2"]]
    # a read that writes runs (again, whole) on the writer
    assert ok(su, "select 1; delete from api_sql_t where label = 'b'")["affectedRows"] == 0
    assert ok(su, "select label from api_sql_t")["rows"] == [["a"]]
    assert (
        ok(su, "with x as (select 1) insert into api_sql_t (label) select 'w' from x")["rows"] == []
    )
    assert ok(su, "select count(*) from api_sql_t")["rows"] == [["2"]]


def test_at_most_1000_rows(su: httpx.Client) -> None:
    result = ok(
        su,
        "with recursive c(x) as (select 1 union all select x + 1 from c where x < 1500) "
        "select x from c",
    )
    assert len(result["rows"]) == 1000
    assert result["rows"][-1] == ["1000"]


def test_hostile_statements_are_refused(runtime: RuntimeProcess, su: httpx.Client) -> None:
    outside = runtime.root / "attached.db"
    refused(su, f"ATTACH DATABASE '{outside}' AS other")
    refused(su, f"ATTACH DATABASE '{runtime.data_dir / 'auxiliary.db'}' AS logs")
    refused(su, "DETACH DATABASE main")
    refused(su, f"VACUUM INTO '{runtime.root / 'copy.db'}'")
    refused(su, "VACUUM")
    assert not outside.exists() and not (runtime.root / "copy.db").exists()
    refused(su, "select load_extension('/nonexistent.so')")
    for statement in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT s", "RELEASE s"):
        refused(su, statement)
    refused(su, "create table api_sql_committed (x); COMMIT")
    for pragma in (
        "journal_mode = DELETE",
        "query_only = OFF",
        "writable_schema = ON",
        "foreign_keys = OFF",
        "synchronous = OFF",
        "wal_autocheckpoint = 1",
        "wal_checkpoint",
        "wal_checkpoint(TRUNCATE)",
    ):
        refused(su, f"PRAGMA {pragma}")
    for temp in (
        "create temp table tt (x)",
        "create temp view tv as select 1",
        "create temp trigger tr after insert on _collections begin select 1; end",
    ):
        refused(su, temp)
    # introspection stays allowed
    assert ok(su, "PRAGMA journal_mode")["rows"] == [["wal"]]
    assert ok(su, "PRAGMA query_only")["rows"] == [["1"]]  # a reader answered
    assert ok(su, "PRAGMA foreign_keys")["rows"] == [["1"]]
    assert ok(su, "select count(*) from pragma_table_info('_collections')")["rows"] != [["0"]]
    assert ok(su, "PRAGMA integrity_check")["rows"] == [["ok"]]
    # nothing was left behind on the connections: records and views work as before
    listed = su.get("/api/collections/users/records")
    assert listed.status_code == 200, listed.text
    conn = sqlite3.connect(f"file:{runtime.data_dir / 'data.db'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in conn.execute("select name from sqlite_master")}
        assert "api_sql_committed" not in tables
    finally:
        conn.close()


def test_writes_reload_the_collections(runtime: RuntimeProcess, su: httpx.Client) -> None:
    created = su.post("/api/collections", json={"name": "api_sql_notes", "type": "base"})
    assert created.status_code == 200, created.text
    with runtime.client() as guest:
        assert guest.get("/api/collections/api_sql_notes/records").status_code == 403
        ok(su, "update _collections set listRule = '' where name = 'api_sql_notes'")
        assert guest.get("/api/collections/api_sql_notes/records").status_code == 200
    message = failure(su, "update _collections set fields = 'nope' where name = 'api_sql_notes'")
    assert message.startswith(
        "Failed to execute query. Raw error:\nthe collections cannot be loaded after the query"
    )
    viewed = su.get("/api/collections/api_sql_notes")
    assert viewed.status_code == 200 and viewed.json()["fields"][0]["name"] == "id"


def test_the_data_folder_is_untouched(runtime: RuntimeProcess, su: httpx.Client) -> None:
    before = sorted(p.name for p in Path(runtime.data_dir).iterdir())
    ok(su, "create table api_sql_files (x); insert into api_sql_files values (1)")
    refused(su, f"VACUUM INTO '{runtime.data_dir / 'stolen.db'}'")
    after = sorted(p.name for p in Path(runtime.data_dir).iterdir())
    assert after == before
