"""Sign-up, sessions and tokens through the real API (both control-database backends)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import ServeProcess, sign_up

_emails = itertools.count()


def email() -> str:
    return f"user{next(_emails)}@example.com"


@pytest.fixture
def api(serve: ServeProcess) -> Iterator[httpx.Client]:
    with serve.client() as client:
        yield client


def test_sign_up_returns_the_account(api: httpx.Client) -> None:
    address = email()
    response = api.post("/api/accounts", json={"email": address.upper(), "password": "0123456789"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == address
    assert len(body["id"]) == 15
    assert "password" not in response.text


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"email": "not-an-email", "password": "0123456789"}, "email"),
        ({"email": "a@example.com", "password": "short"}, "password"),
        ({"password": "0123456789"}, "email"),
    ],
)
def test_sign_up_refuses_bad_input_with_422(
    api: httpx.Client, payload: dict[str, str], field: str
) -> None:
    response = api.post("/api/accounts", json=payload)
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == 422 and body["code"] == "invalid", body
    assert body["field"] == field and field in {problem["field"] for problem in body["errors"]}


def test_sign_up_refuses_a_taken_email_with_409(api: httpx.Client) -> None:
    address = email()
    assert api.post("/api/accounts", json={"email": address, "password": "0123456789"}).is_success
    again = api.post("/api/accounts", json={"email": address, "password": "9876543210"})
    assert again.status_code == 409
    assert again.json()["field"] == "email"


def test_login_gives_a_token_that_authenticates(api: httpx.Client) -> None:
    address = email()
    token = sign_up(api, address)
    me = api.get("/api/accounts/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["email"] == address


def test_wrong_credentials_are_401(api: httpx.Client) -> None:
    address = email()
    sign_up(api, address)
    wrong = api.post("/api/sessions", json={"email": address, "password": "wrong-password"})
    assert wrong.status_code == 401
    unknown = api.post("/api/sessions", json={"email": email(), "password": "whatever-12"})
    assert unknown.status_code == 401


def test_requests_without_or_with_a_bad_token_are_401(api: httpx.Client) -> None:
    assert api.get("/api/instances").status_code == 401
    bad = api.get("/api/instances", headers={"Authorization": "Bearer pf_nope"})
    assert bad.status_code == 401
    assert "log in" in bad.json()["detail"]


def test_logout_revokes_the_session(api: httpx.Client) -> None:
    token = sign_up(api, email())
    auth = {"Authorization": f"Bearer {token}"}
    assert api.delete("/api/sessions/current", headers=auth).status_code == 204
    assert api.get("/api/accounts/me", headers=auth).status_code == 401


def test_api_tokens_are_shown_once_and_revocable(api: httpx.Client) -> None:
    session = {"Authorization": f"Bearer {sign_up(api, email())}"}
    created = api.post("/api/tokens", json={"name": "ci"}, headers=session)
    assert created.status_code == 201
    token = created.json()["token"]
    listed = api.get("/api/tokens", headers=session).json()
    assert [t["name"] for t in listed] == ["ci"]
    assert "token" not in listed[0]
    as_token = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/instances", headers=as_token).status_code == 200
    assert api.delete(f"/api/tokens/{created.json()['id']}", headers=session).status_code == 204
    assert api.get("/api/instances", headers=as_token).status_code == 401


def test_an_empty_token_name_is_422(api: httpx.Client) -> None:
    session = {"Authorization": f"Bearer {sign_up(api, email())}"}
    assert api.post("/api/tokens", json={"name": ""}, headers=session).status_code == 422


def test_revoking_another_accounts_token_is_404(api: httpx.Client) -> None:
    owner = {"Authorization": f"Bearer {sign_up(api, email())}"}
    other = {"Authorization": f"Bearer {sign_up(api, email())}"}
    token_id = api.post("/api/tokens", json={"name": "mine"}, headers=owner).json()["id"]
    assert api.delete(f"/api/tokens/{token_id}", headers=other).status_code == 404


def test_health_and_openapi_docs(api: httpx.Client) -> None:
    assert api.get("/api/health").json()["code"] == 200
    assert api.get("/docs").status_code == 200
    assert "/api/instances" in api.get("/openapi.json").json()["paths"]
