"""`POST /api/files/token` and protected files, against a real runtime process: a file token
for any auth record (superusers included) that lasts the collection's `fileToken.duration`;
a protected file served only when the collection's `viewRule` passes for the token's record
(the Authorization header is not used; `@request.context` is `protectedFile`; a superuser's
token always passes, except from outside `superuserIPs`), never for an auth token, an expired
token, or a token revoked by a password change."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from typing import Any

import httpx
import jwt
import pytest
from PIL import Image

from tests.instance_runtime.runtime_process import RuntimeProcess

NOT_FOUND = {"data": {}, "message": "The requested resource wasn't found.", "status": 404}
PASSWORD = "member-pass-1234"


def _ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


@pytest.fixture(scope="module")
def world(runtime: RuntimeProcess) -> dict[str, Any]:
    su = runtime.client(superuser=True)
    members = _ok(
        su.post(
            "/api/collections",
            json={"name": "members", "type": "auth", "fileToken": {"duration": 120}},
        )
    )
    users = {}
    for name in ("alice", "bob"):
        body = {"email": f"{name}@example.com", "password": PASSWORD, "passwordConfirm": PASSWORD}
        users[name] = _ok(su.post("/api/collections/members/records", json=body))
    fields = [
        {"name": "owner", "type": "relation", "collectionId": members["id"], "maxSelect": 1},
        {"name": "secret", "type": "file", "protected": True, "maxSelect": 1},
        {"name": "pub", "type": "file", "maxSelect": 1},
    ]
    rules = {"listRule": "", "viewRule": "@request.auth.id = owner"}
    docs = _ok(su.post("/api/collections", json={"name": "docs", "fields": fields, **rules}))
    out = io.BytesIO()
    Image.new("RGB", (30, 20), (10, 200, 10)).save(out, "PNG")
    png = out.getvalue()
    rec = _ok(
        su.post(
            "/api/collections/docs/records",
            data={"owner": users["alice"]["id"]},
            files=[("secret", ("secret.png", png)), ("pub", ("pub.txt", b"public"))],
        )
    )
    return {"members": members, "users": users, "docs": docs, "rec": rec, "png": png}


def _login(runtime: RuntimeProcess, name: str) -> str:
    got = httpx.post(
        f"{runtime.url}/api/collections/members/auth-with-password",
        json={"identity": f"{name}@example.com", "password": PASSWORD},
    )
    token: str = _ok(got)["token"]
    return token


def _file_token(runtime: RuntimeProcess, auth_token: str) -> str:
    token: str = _ok(runtime.client(token=auth_token).post("/api/files/token"))["token"]
    return token


def _secret(runtime: RuntimeProcess, world: dict[str, Any], **params: str) -> httpx.Response:
    rec = world["rec"]
    return runtime.client().get(f"/api/files/docs/{rec['id']}/{rec['secret']}", params=params)


def test_a_token_needs_an_auth_record(runtime: RuntimeProcess, world: dict[str, Any]) -> None:
    for client in (runtime.client(), runtime.client(token="not-a-token")):
        got = client.post("/api/files/token")
        assert got.status_code == 401
        assert got.json() == {
            "data": {},
            "message": "The request requires valid record authorization token.",
            "status": 401,
        }


def test_token_claims_and_duration(runtime: RuntimeProcess, world: dict[str, Any]) -> None:
    alice = world["users"]["alice"]
    claims = _claims(_file_token(runtime, _login(runtime, "alice")))
    assert {k: claims[k] for k in ("collectionId", "id", "type")} == {
        "collectionId": world["members"]["id"],
        "id": alice["id"],
        "type": "file",
    }
    assert abs(claims["exp"] - (time.time() + 120)) < 5  # the collection's fileToken.duration
    su_claims = _claims(_file_token(runtime, runtime.token()))
    assert su_claims["type"] == "file"
    assert su_claims["collectionId"] == "pbc_3142635823"  # _superusers
    assert abs(su_claims["exp"] - (time.time() + 180)) < 5  # PocketBase's default


def test_a_protected_file_needs_a_token_of_a_record_the_rule_lets_in(
    runtime: RuntimeProcess, world: dict[str, Any]
) -> None:
    rec = world["rec"]
    alice_auth = _login(runtime, "alice")
    url = f"/api/files/docs/{rec['id']}/{rec['secret']}"

    anon = runtime.client().get(url)
    assert anon.status_code == 404 and anon.json() == NOT_FOUND
    assert runtime.client(token=alice_auth).get(url).status_code == 404  # the header is not used
    assert runtime.client(superuser=True).get(url).status_code == 404
    assert _secret(runtime, world, token=alice_auth).status_code == 404  # an auth token
    assert _secret(runtime, world, token="garbage").status_code == 404

    got = _secret(runtime, world, token=_file_token(runtime, alice_auth))
    assert got.status_code == 200 and got.content == world["png"]
    assert got.headers["content-type"] == "image/png"
    thumb = _secret(runtime, world, token=_file_token(runtime, alice_auth), thumb="100x100")
    assert thumb.status_code == 200
    assert thumb.headers["content-disposition"] == f'inline; filename="100x100_{rec["secret"]}"'

    bob = _file_token(runtime, _login(runtime, "bob"))
    assert _secret(runtime, world, token=bob).status_code == 404
    superuser = _file_token(runtime, runtime.token())
    assert _secret(runtime, world, token=superuser).status_code == 200

    public = runtime.client().get(f"/api/files/docs/{rec['id']}/{rec['pub']}")
    assert public.status_code == 200 and public.content == b"public"


def test_the_rule_sees_the_protected_file_context(runtime: RuntimeProcess) -> None:
    su = runtime.client(superuser=True)
    fields = [{"name": "secret", "type": "file", "protected": True, "maxSelect": 1}]
    rule = "@request.context = 'protectedFile' && @request.query.token = ''"
    _ok(su.post("/api/collections", json={"name": "ctxdocs", "fields": fields, "viewRule": rule}))
    rec = _ok(su.post("/api/collections/ctxdocs/records", files=[("secret", ("a.txt", b"ctx"))]))
    url = f"/api/files/ctxdocs/{rec['id']}/{rec['secret']}"
    got = runtime.client().get(url)
    assert got.status_code == 200 and got.content == b"ctx"  # a guest, in the file context
    assert su.get(f"/api/collections/ctxdocs/records/{rec['id']}").status_code == 200
    assert runtime.client().get(f"/api/collections/ctxdocs/records/{rec['id']}").status_code == 404


def test_a_null_view_rule_lets_only_superusers_in(
    runtime: RuntimeProcess, world: dict[str, Any]
) -> None:
    su = runtime.client(superuser=True)
    fields = [{"name": "secret", "type": "file", "protected": True, "maxSelect": 1}]
    _ok(su.post("/api/collections", json={"name": "lockeddocs", "fields": fields}))
    rec = _ok(su.post("/api/collections/lockeddocs/records", files=[("secret", ("a.txt", b"x"))]))
    url = f"/api/files/lockeddocs/{rec['id']}/{rec['secret']}"
    alice = _file_token(runtime, _login(runtime, "alice"))
    assert runtime.client().get(url, params={"token": alice}).status_code == 404
    superuser = _file_token(runtime, runtime.token())
    assert runtime.client().get(url, params={"token": superuser}).content == b"x"


def _forged(runtime: RuntimeProcess, world: dict[str, Any], exp: int) -> str:
    """A file token of alice signed with her real key (read from the database)."""
    db = sqlite3.connect(runtime.data_dir / "data.db")
    try:
        (token_key,) = db.execute(
            "SELECT tokenKey FROM members WHERE id = ?", (world["users"]["alice"]["id"],)
        ).fetchone()
        (options,) = db.execute(
            "SELECT options FROM _collections WHERE name = 'members'"
        ).fetchone()
    finally:
        db.close()
    secret = json.loads(options)["fileToken"]["secret"]
    claims = {
        "collectionId": world["members"]["id"],
        "id": world["users"]["alice"]["id"],
        "type": "file",
        "exp": exp,
    }
    return jwt.encode(claims, token_key + secret, algorithm="HS256")


def test_an_expired_or_revoked_token_is_refused(
    runtime: RuntimeProcess, world: dict[str, Any]
) -> None:
    assert _secret(runtime, world, token=_forged(runtime, world, int(time.time()) + 60)).is_success
    assert (
        _secret(runtime, world, token=_forged(runtime, world, int(time.time()) - 5)).status_code
        == 404
    )

    token = _file_token(runtime, _login(runtime, "bob"))
    su = runtime.client(superuser=True)
    bob = world["users"]["bob"]
    _ok(su.patch(f"/api/collections/docs/records/{world['rec']['id']}", json={"owner": bob["id"]}))
    assert _secret(runtime, world, token=token).status_code == 200
    new_password = {"password": "another-pass-123", "passwordConfirm": "another-pass-123"}
    _ok(su.patch(f"/api/collections/members/records/{bob['id']}", json=new_password))
    assert _secret(runtime, world, token=token).status_code == 404  # tokenKey changed
    alice = world["users"]["alice"]
    _ok(
        su.patch(f"/api/collections/docs/records/{world['rec']['id']}", json={"owner": alice["id"]})
    )


def test_a_superuser_token_from_outside_superuser_ips_is_refused() -> None:
    with RuntimeProcess.started() as runtime:
        su = runtime.client(superuser=True)
        fields = [{"name": "secret", "type": "file", "protected": True, "maxSelect": 1}]
        _ok(su.post("/api/collections", json={"name": "ipdocs", "fields": fields}))
        rec = _ok(su.post("/api/collections/ipdocs/records", files=[("secret", ("a.txt", b"ip"))]))
        url = f"/api/files/ipdocs/{rec['id']}/{rec['secret']}"
        token = _file_token(runtime, runtime.token())
        assert runtime.client().get(url, params={"token": token}).content == b"ip"
        _ok(su.patch("/api/settings", json={"superuserIPs": ["10.9.8.7"]}))
        refused = runtime.client().get(url, params={"token": token})
        assert refused.status_code == 404 and refused.json() == NOT_FOUND
