"""Records, collections, auth and batch APIs against a real runtime process over HTTP.

Table-driven like PocketBase's tests/api.go: each scenario is a request and the status and body
parts it must answer. The module builds its collections once (`world`); scenarios that write
use their own records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess

USER_EMAIL = "user@example.com"
USER_PASSWORD = "user-pass-12345"


@dataclass
class World:
    runtime: RuntimeProcess
    su: httpx.Client
    guest: httpx.Client
    user: httpx.Client
    ids: dict[str, str] = field(default_factory=dict)


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def world(runtime: RuntimeProcess) -> World:
    su = runtime.client(superuser=True)
    _ok(su.post("/api/collections", json={
        "name": "authors", "type": "base", "listRule": "", "viewRule": "",
        "fields": [{"name": "name", "type": "text", "required": True}],
    }))  # fmt: skip
    authors = _ok(su.get("/api/collections/authors"))
    _ok(su.post("/api/collections", json={
        "name": "posts", "type": "base", "listRule": "", "viewRule": "", "createRule": "",
        "updateRule": "", "deleteRule": None,
        "fields": [
            {"name": "title", "type": "text", "required": True, "max": 20},
            {"name": "views", "type": "number", "onlyInt": True},
            {"name": "tags", "type": "select", "values": ["a", "b", "c"], "maxSelect": 3},
            {"name": "author", "type": "relation", "collectionId": authors["id"],
             "maxSelect": 1, "required": False, "cascadeDelete": True},
            {"name": "secret", "type": "text", "hidden": True},
            {"name": "body", "type": "editor"},
            {"name": "created", "type": "autodate", "onCreate": True},
            {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
        ],
    }))  # fmt: skip
    _ok(su.post("/api/collections", json={
        "name": "pins", "type": "base", "listRule": None,
        "fields": [{"name": "author", "type": "relation", "collectionId": authors["id"],
                    "maxSelect": 1, "required": True}],
    }))  # fmt: skip
    ada = _ok(su.post("/api/collections/authors/records", json={"name": "Ada"}))
    bob = _ok(su.post("/api/collections/authors/records", json={"name": "Bob"}))
    post = _ok(su.post("/api/collections/posts/records", json={
        "title": "first", "views": 3, "tags": ["a"], "author": ada["id"], "secret": "s",
    }))  # fmt: skip
    _ok(su.post("/api/collections/pins/records", json={"author": bob["id"]}))
    _ok(su.post("/api/collections/users/records", json={
        "email": USER_EMAIL, "password": USER_PASSWORD, "passwordConfirm": USER_PASSWORD,
    }))  # fmt: skip
    auth = _ok(runtime.client().post(
        "/api/collections/users/auth-with-password",
        json={"identity": USER_EMAIL, "password": USER_PASSWORD},
    ))  # fmt: skip
    return World(
        runtime, su, runtime.client(), runtime.client(token=auth["token"]),
        {"ada": ada["id"], "bob": bob["id"], "post": post["id"], "authors": authors["id"]},
    )  # fmt: skip


@dataclass
class Scenario:
    name: str
    who: str  # su | guest | user
    method: str
    url: str
    body: Any = None
    status: int = 200
    expect: Callable[[Any, World], None] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _error(status: int, message: str, data: dict[str, Any] | None = None) -> Callable[..., None]:
    def check(body: Any, world: World) -> None:
        assert body == {"data": data or {}, "message": message, "status": status}

    return check


def _codes(**codes: str) -> Callable[..., None]:
    def check(body: Any, world: World) -> None:
        assert {k: v["code"] for k, v in body["data"].items()} == codes, body

    return check


SCENARIOS = [
    Scenario("health", "guest", "GET", "/api/health",
             expect=lambda b, w: b.__eq__({"message": "API is healthy.", "code": 200, "data": {}})
             or None),
    Scenario("collections need auth", "guest", "GET", "/api/collections", status=401,
             expect=_error(401, "The request requires valid record authorization token.")),
    Scenario("collections need a superuser", "user", "GET", "/api/collections", status=403),
    Scenario("unknown collection", "su", "GET", "/api/collections/nope", status=404,
             expect=_error(404, "The requested resource wasn't found.")),
    Scenario("records of an unknown collection", "guest", "GET",
             "/api/collections/nope/records", status=404,
             expect=_error(404, "Missing collection context.")),
    Scenario("null list rule: superusers only", "guest", "GET", "/api/collections/pins/records",
             status=403, expect=_error(403, "Only superusers can perform this action.")),
    Scenario("null delete rule: superusers only", "guest", "DELETE",
             "/api/collections/posts/records/{post}", status=403),
    Scenario("view a missing record", "guest", "GET", "/api/collections/posts/records/nope",
             status=404, expect=_error(404, "The requested resource wasn't found.")),
    Scenario("hidden fields are not returned", "guest", "GET",
             "/api/collections/posts/records/{post}",
             expect=lambda b, w: None if "secret" not in b and b["title"] == "first" else
             pytest.fail(str(b))),
    Scenario("malformed JSON", "guest", "POST", "/api/collections/posts/records",
             content=b"{bad", headers={"content-type": "application/json"}, status=400,
             expect=_error(400, "Something went wrong while processing your request.")),
    Scenario("validation codes per field", "guest", "POST", "/api/collections/posts/records",
             body={"title": "x" * 21, "views": 1.5, "tags": ["z"], "author": "missing"},
             status=400, expect=_codes(
                 title="validation_max_text_constraint", views="validation_only_int_constraint",
                 tags="validation_invalid_value", author="validation_missing_rel_records")),
    Scenario("required field", "guest", "POST", "/api/collections/posts/records", body={},
             status=400, expect=_codes(title="validation_required")),
    Scenario("invalid client id", "guest", "POST", "/api/collections/posts/records",
             body={"id": "UPPER_case_1234", "title": "t"}, status=400,
             expect=_codes(id="validation_invalid_format")),
    Scenario("body over the limit", "guest", "POST", "/api/collections/authors/records",
             content=b'{"name":"' + b"a" * (33 << 20) + b'"}',
             headers={"content-type": "application/json"}, status=413,
             expect=_error(413, "Request entity too large.")),
    Scenario("unknown sort field", "guest", "GET", "/api/collections/posts/records?sort=nope",
             status=400),
    Scenario("perPage is capped at 1000", "guest", "GET",
             "/api/collections/posts/records?perPage=5000&skipTotal=1",
             expect=lambda b, w: None if (b["perPage"], b["totalItems"]) == (1000, -1) else
             pytest.fail(str(b))),
    Scenario("create collection refusal", "su", "POST", "/api/collections",
             body={"name": "bad name!", "fields": []}, status=400,
             expect=_codes(name="validation_match_invalid")),
    Scenario("system collections cannot be deleted", "su", "DELETE",
             "/api/collections/_superusers", status=400),
    Scenario("a referenced collection cannot be deleted", "su", "DELETE",
             "/api/collections/authors", status=400,
             expect=_error(400, "Failed to delete collection probably due to existing reference "
                                "in pins, posts.")),
    Scenario("batch is disabled by default", "su", "POST", "/api/batch",
             body={"requests": []}, status=403,
             expect=_error(403, "Batch requests are not allowed.")),
    Scenario("wrong password", "guest", "POST", "/api/collections/users/auth-with-password",
             body={"identity": USER_EMAIL, "password": "wrong-password"}, status=400,
             expect=_error(400, "Failed to authenticate.")),
    Scenario("refresh without a token", "guest", "POST", "/api/collections/users/auth-refresh",
             status=401),
]  # fmt: skip


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_scenario(world: World, scenario: Scenario) -> None:
    client = {"su": world.su, "guest": world.guest, "user": world.user}[scenario.who]
    url = scenario.url.format(**world.ids)
    kwargs: dict[str, Any] = {"headers": scenario.headers}
    if scenario.content is not None:
        kwargs["content"] = scenario.content
    elif scenario.body is not None:
        kwargs["json"] = scenario.body
    response = client.request(scenario.method, url, **kwargs)
    assert response.status_code == scenario.status, response.text
    if scenario.expect is not None:
        scenario.expect(response.json(), world)


def test_create_view_list_expand_fields(world: World) -> None:
    made = _ok(world.guest.post("/api/collections/posts/records", json={
        "id": "abcdefghij12345", "title": "second", "views": "7", "tags": "b",
        "author": world.ids["ada"],
    }))  # fmt: skip
    assert made["id"] == "abcdefghij12345"
    assert (made["views"], made["tags"]) == (7, ["b"])
    assert made["created"] and made["created"] == made["updated"]
    listed = world.guest.get(
        "/api/collections/posts/records",
        params={"sort": "-title", "expand": "author", "fields": "id,title,expand.author.name"},
    ).json()
    assert [i["title"] for i in listed["items"]][:2] == ["second", "first"]
    assert listed["items"][0] == {
        "id": "abcdefghij12345", "title": "second", "expand": {"author": {"name": "Ada"}},
    }  # fmt: skip
    back = _ok(world.guest.get(
        f"/api/collections/authors/records/{world.ids['ada']}",
        params={"expand": "posts_via_author", "fields": "name,expand.posts_via_author.title"},
    ))  # fmt: skip
    titles = sorted(p["title"] for p in back["expand"]["posts_via_author"])
    assert titles == ["first", "second"]
    excerpt = _ok(world.guest.get(
        f"/api/collections/posts/records/{made['id']}", params={"fields": "title:excerpt(3,true)"}
    ))  # fmt: skip
    assert excerpt == {"title": "sec..."}


def test_update_with_modifiers(world: World) -> None:
    rec = _ok(world.guest.post(
        "/api/collections/posts/records", json={"title": "mods", "views": 10, "tags": ["a"]}
    ))  # fmt: skip
    url = f"/api/collections/posts/records/{rec['id']}"
    updated = _ok(world.guest.patch(url, json={"views+": 5, "tags+": ["c"], "+tags": "b"}))
    assert (updated["views"], updated["tags"]) == (15, ["b", "a", "c"])
    updated = _ok(world.guest.patch(url, json={"views-": 1, "tags-": ["a"]}))
    assert (updated["views"], updated["tags"]) == (14, ["b", "c"])
    assert updated["updated"] >= rec["updated"]


def test_multipart_create(world: World) -> None:
    made = world.guest.post(
        "/api/collections/posts/records",
        data={"title": "form", "views": "2", "tags": ["a", "b"]},
        files={"ignored": ("a.txt", b"x")},
    )
    body = _ok(made)
    assert (body["title"], body["views"], body["tags"]) == ("form", 2, ["a", "b"])


def test_delete_refused_while_a_required_relation_points_at_it(world: World) -> None:
    refused = world.su.delete(f"/api/collections/authors/records/{world.ids['bob']}")
    assert refused.status_code == 400, refused.text
    assert refused.json()["message"].startswith("Failed to delete record.")
    assert world.su.get(f"/api/collections/authors/records/{world.ids['bob']}").status_code == 200


def test_delete_cascades(world: World) -> None:
    carl = _ok(world.su.post("/api/collections/authors/records", json={"name": "Carl"}))
    post = _ok(world.su.post(
        "/api/collections/posts/records", json={"title": "by carl", "author": carl["id"]}
    ))  # fmt: skip
    assert world.su.delete(f"/api/collections/authors/records/{carl['id']}").status_code == 204
    assert world.su.get(f"/api/collections/posts/records/{post['id']}").status_code == 404


def test_batch_is_transactional(world: World) -> None:
    _ok(world.su.patch("/api/settings", json={"batch": {"enabled": True}}))
    failed = world.su.post("/api/batch", json={"requests": [
        {"method": "POST", "url": "/api/collections/authors/records", "body": {"name": "in"}},
        {"method": "POST", "url": "/api/collections/authors/records", "body": {}},
    ]})  # fmt: skip
    assert failed.status_code == 400, failed.text
    assert failed.json()["message"] == "Batch transaction failed."
    assert "1" in failed.json()["data"]["requests"]
    names = [r["name"] for r in world.su.get("/api/collections/authors/records").json()["items"]]
    assert "in" not in names
    done = world.su.post("/api/batch", json={"requests": [
        {"method": "POST", "url": "/api/collections/authors/records", "body": {"name": "b1"}},
        {"method": "PATCH", "url": f"/api/collections/authors/records/{world.ids['ada']}",
         "body": {"name": "Ada L."}},
    ]})  # fmt: skip
    results = done.json()
    assert done.status_code == 200, done.text
    assert [r["status"] for r in results] == [200, 200]
    assert results[1]["body"]["name"] == "Ada L."


def test_password_change_revokes_tokens(world: World) -> None:
    me = world.user.post("/api/collections/users/auth-refresh")
    record = _ok(me)["record"]
    new_password = "another-pass-987"
    changed = world.su.patch(
        f"/api/collections/users/records/{record['id']}",
        json={"password": new_password, "passwordConfirm": new_password},
    )
    _ok(changed)
    assert world.user.post("/api/collections/users/auth-refresh").status_code == 401
    again = world.guest.post(
        "/api/collections/users/auth-with-password",
        json={"identity": USER_EMAIL, "password": new_password},
    )
    assert _ok(again)["record"]["email"] == USER_EMAIL


def test_schema_change_keeps_data(world: World) -> None:
    su = world.su
    coll = _ok(su.post("/api/collections", json={
        "name": "migr", "fields": [{"name": "a", "type": "text"},
                                   {"name": "s", "type": "select", "values": ["x", "y"]}],
    }))  # fmt: skip
    rec = _ok(su.post("/api/collections/migr/records", json={"a": "keep", "s": "x"}))
    fields = coll["fields"]
    for f in fields:
        if f["name"] == "a":
            f["name"] = "renamed"
        if f["name"] == "s":
            f["maxSelect"] = 2
    fields.append({"name": "added", "type": "number"})
    _ok(su.patch("/api/collections/migr", json={"fields": fields}))
    got = _ok(su.get(f"/api/collections/migr/records/{rec['id']}"))
    assert (got["renamed"], got["s"], got["added"]) == ("keep", ["x"], 0)
    _ok(su.patch("/api/collections/migr", json={
        "name": "migr2", "fields": [f for f in fields if f["name"] != "added"],
    }))  # fmt: skip
    got = _ok(su.get(f"/api/collections/migr2/records/{rec['id']}"))
    assert "added" not in got and got["renamed"] == "keep"
    assert su.delete("/api/collections/migr2/truncate").status_code == 204
    assert su.get("/api/collections/migr2/records").json()["totalItems"] == 0


def test_view_under_a_rule_with_a_join_is_one_answer(world: World) -> None:
    """A view rule over a relation and the auth record (found and checked in one query):
    a record that passes is answered whole, one that does not and a missing one are 404."""
    _ok(world.su.post("/api/collections", json={
        "name": "notes", "type": "base", "listRule": "", "createRule": "",
        "viewRule": "author.name = 'Ada' && (@request.auth.id != '' || level < 5)",
        "fields": [
            {"name": "level", "type": "number"},
            {"name": "author", "type": "relation", "collectionId": world.ids["authors"],
             "maxSelect": 1},
        ],
    }))  # fmt: skip
    reader = {"email": "reader@example.com", "password": USER_PASSWORD}
    _ok(world.su.post("/api/collections/users/records", json={
        **reader, "passwordConfirm": USER_PASSWORD}))  # fmt: skip
    login = world.runtime.client().post(
        "/api/collections/users/auth-with-password",
        json={"identity": reader["email"], "password": USER_PASSWORD},
    )  # (world.user's token may be revoked by an earlier test)
    user = world.runtime.client(token=_ok(login)["token"])
    # authors of its own (an earlier test renames world's Ada)
    ada = _ok(world.su.post("/api/collections/authors/records", json={"name": "Ada"}))["id"]
    bob = _ok(world.su.post("/api/collections/authors/records", json={"name": "Bob"}))["id"]
    low = _ok(world.su.post("/api/collections/notes/records", json={
        "level": 1, "author": ada}))  # fmt: skip
    high = _ok(world.su.post("/api/collections/notes/records", json={
        "level": 9, "author": ada}))  # fmt: skip
    bobs = _ok(world.su.post("/api/collections/notes/records", json={
        "level": 1, "author": bob}))  # fmt: skip
    url = "/api/collections/notes/records/"
    seen = _ok(world.guest.get(url + low["id"]))
    assert seen["id"] == low["id"] and seen["level"] == 1 and seen["author"] == ada
    assert seen == _ok(world.su.get(url + low["id"]))
    for who, rid in [
        (world.guest, high["id"]),
        (world.guest, bobs["id"]),
        (user, bobs["id"]),
        (world.guest, "missing"),
    ]:
        answer = who.get(url + rid)
        assert answer.status_code == 404, answer.text
        assert answer.json()["message"] == "The requested resource wasn't found."
    assert _ok(user.get(url + high["id"]))["level"] == 9
    assert _ok(world.su.get(url + bobs["id"]))["id"] == bobs["id"]
