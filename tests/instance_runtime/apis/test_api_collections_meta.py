"""`/api/collections/meta/*` of a real runtime process: the scaffolds of each collection type,
the OAuth2 providers and the dry run of a view query, for superusers only (PocketBase's 401 and
403), with PocketBase's 400s for bad bodies and bad queries, and nothing left behind by a dry
run. (Side by side with PocketBase: tests/conformance/test_conformance_collections_meta.py.)"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from instance_runtime.tools.oauth2 import providers as oauth2_providers
from tests.instance_runtime.runtime_process import RuntimeProcess

USER_EMAIL, USER_PASSWORD = "meta-user@example.com", "meta-user-pass-1"
DRY_RUN = "/api/collections/meta/dry-run-view"
ENDPOINTS = [
    ("GET", "/api/collections/meta/scaffolds"),
    ("GET", "/api/collections/meta/oauth2-providers"),
    ("POST", DRY_RUN),
]


@pytest.fixture(scope="module")
def su(runtime: RuntimeProcess) -> Iterator[httpx.Client]:
    with runtime.client(superuser=True) as client:
        yield client


@pytest.fixture(scope="module")
def user_token(runtime: RuntimeProcess, su: httpx.Client) -> str:
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
    token: str = auth.json()["token"]
    return token


@pytest.fixture(scope="module")
def posts(su: httpx.Client) -> str:
    created = su.post(
        "/api/collections",
        json={
            "name": "meta_posts",
            "fields": [
                {"name": "title", "type": "text"},
                {"name": "n", "type": "number"},
                {"name": "flag", "type": "bool"},
                {"name": "secret", "type": "text", "hidden": True},
            ],
        },
    )
    assert created.status_code == 200, created.text
    for rid, title, n in (("metapost0000001", "hello", 1.5), ("metapost0000002", "world", 1.5)):
        record = su.post(
            "/api/collections/meta_posts/records",
            json={"id": rid, "title": title, "n": n, "flag": True, "secret": "s"},
        )
        assert record.status_code == 200, record.text
    return "meta_posts"


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_guests_and_users_are_refused(
    runtime: RuntimeProcess, user_token: str, method: str, path: str
) -> None:
    body = {"query": "select 1 as id"}
    with runtime.client() as guest:
        response = guest.request(method, path, json=body)
    assert response.status_code == 401
    assert response.json()["data"] == {}
    with runtime.client(token=user_token) as user:
        response = user.request(method, path, json=body)
    assert response.status_code == 403
    assert response.json() == {
        "data": {},
        "message": "The authorized record is not allowed to perform this action.",
        "status": 403,
    }


def test_scaffolds(su: httpx.Client) -> None:
    first = su.get("/api/collections/meta/scaffolds").json()
    second = su.get("/api/collections/meta/scaffolds").json()
    assert sorted(first) == ["auth", "base", "view"]
    for ctype, scaffold in first.items():
        assert scaffold["type"] == ctype
        assert scaffold["id"] == scaffold["name"] == scaffold["created"] == ""
        assert scaffold["system"] is False and scaffold["listRule"] is None
    assert [f["name"] for f in first["base"]["fields"]] == ["id"]
    assert first["base"]["indexes"] == []
    assert first["view"]["fields"] == [] and first["view"]["viewQuery"] == ""
    auth = first["auth"]
    assert [f["name"] for f in auth["fields"]] == [
        "id",
        "password",
        "tokenKey",
        "email",
        "emailVisibility",
        "verified",
    ]
    assert auth["authRule"] == "" and auth["manageRule"] is None
    assert auth["passwordAuth"] == {"enabled": True, "identityFields": ["email"]}
    assert "secret" not in json.dumps(auth)
    ids = [re.fullmatch(r"CREATE UNIQUE INDEX `idx_\w+?_([a-z0-9]{10})` ON `` .*", i) for i in
           auth["indexes"]]  # fmt: skip
    assert all(ids) and len({m.group(1) for m in ids if m}) == 1
    assert auth["indexes"] != second["auth"]["indexes"]  # a random id each time


def test_oauth2_providers(su: httpx.Client) -> None:
    listed = su.get("/api/collections/meta/oauth2-providers").json()
    specs = list(oauth2_providers.PROVIDERS.values())
    assert [p["name"] for p in listed] == [s.name for s in specs]
    assert [(s.order, s.name) for s in specs] == sorted((s.order, s.name) for s in specs)
    assert all(set(p) == {"name", "displayName", "logo"} for p in listed)
    assert all(p["logo"].lstrip().startswith("<svg") for p in listed)
    github = next(p for p in listed if p["name"] == "github")
    assert github["displayName"] == "GitHub"


def dry_run(su: httpx.Client, query: str) -> httpx.Response:
    return su.post(DRY_RUN, json={"query": query})


def dry_run_error(su: httpx.Client, query: str) -> str:
    response = dry_run(su, query)
    assert response.status_code == 400, response.text
    body: dict[str, Any] = response.json()
    assert body["data"] == {}
    prefix = "Invalid view query. Raw error: \n"
    assert body["message"].startswith(prefix)
    return str(body["message"])[len(prefix) :]


def test_dry_run_fields_and_sample(su: httpx.Client, posts: str) -> None:
    response = dry_run(su, f"select id, title, n, flag, secret, n*2 as twice from {posts};")
    assert response.status_code == 200, response.text
    result = response.json()
    fields = {f["name"]: f for f in result["fields"]}
    assert [f["name"] for f in result["fields"]] == ["id", "title", "n", "flag", "secret", "twice"]
    assert {name: f["type"] for name, f in fields.items()} == {
        "id": "text",
        "title": "text",
        "n": "number",
        "flag": "bool",
        "secret": "text",
        "twice": "json",
    }
    assert fields["secret"]["hidden"] is True and fields["title"]["id"].startswith("_clone_")
    sample = result["sample"]
    assert [r["id"] for r in sample] == ["metapost0000001", "metapost0000002"]
    first = sample[0]
    assert re.fullmatch(r"temp_view_[A-Za-z0-9]{5}", first["collectionName"])
    assert first["collectionId"].startswith("pbc_")
    assert {k: first[k] for k in ("title", "n", "flag", "twice")} == {
        "title": "hello",
        "n": 1.5,
        "flag": True,
        "twice": 3,
    }
    assert "secret" not in first  # hidden fields are not part of a sample


def test_dry_run_ids_are_text_and_samples_at_most_ten(su: httpx.Client) -> None:
    result = dry_run(
        su,
        "with recursive c(x) as (select 1 union all select x + 1 from c where x < 50) "
        "select x as id from c",
    ).json()
    assert [r["id"] for r in result["sample"]] == [str(i) for i in range(1, 11)]


def test_dry_run_refusals(su: httpx.Client, posts: str) -> None:
    assert dry_run_error(su, "select 1 as id; select 2 as id") == (
        "multiple statements are not supported."
    )
    assert dry_run_error(su, f"select title from {posts}").startswith("missing required id")
    assert dry_run_error(su, "select nope as id") == ("SQL logic error: no such column: nope (1).")
    assert "syntax error" in dry_run_error(su, "CREATE TABLE meta_nope (x)")
    assert dry_run_error(su, "select '' as id") == (
        "the query could return records with empty or invalid ids."
    )
    assert dry_run_error(su, f"select n as id from {posts}") == (
        "the query could return records with non-unique ids."
    )


def test_dry_run_bodies(su: httpx.Client) -> None:
    for content in ("{nope", "[1]", '{"query": 5}', '{"query": true}'):
        response = su.post(DRY_RUN, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400
        assert response.json()["message"] == "An error occurred while loading the submitted data."
    for body in ({}, {"query": ""}, {"query": None}):
        response = su.post(DRY_RUN, json=body)
        assert response.status_code == 400
        assert response.json()["data"]["query"]["code"] == "validation_required"
    response = dry_run(su, "select 1 as id" + " " * 4987)
    assert response.status_code == 400
    assert response.json()["data"]["query"]["code"] == "validation_length_too_long"
    assert dry_run(su, "select 1 as id" + " " * 4986).status_code == 200
    form = su.post(DRY_RUN, data={"query": "select 3 as id"})
    assert form.status_code == 200 and form.json()["sample"][0]["id"] == "3"


def test_a_dry_run_leaves_nothing_behind(runtime: RuntimeProcess, su: httpx.Client) -> None:
    def objects() -> set[tuple[str, str]]:
        conn = sqlite3.connect(f"file:{runtime.data_dir / 'data.db'}?mode=ro", uri=True)
        try:
            return {(r[0], r[1]) for r in conn.execute("select type, name from sqlite_master")}
        finally:
            conn.close()

    before = objects()
    collections_before = su.get("/api/collections", params={"perPage": 500}).json()["totalItems"]
    assert dry_run(su, "select 1 as id").status_code == 200
    assert dry_run(su, "select 1 as nope").status_code == 400
    assert objects() == before
    assert su.get("/api/collections", params={"perPage": 500}).json()["totalItems"] == (
        collections_before
    )
