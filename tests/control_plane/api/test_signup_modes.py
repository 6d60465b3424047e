"""Sign-up by invitation, and closed sign-up (each with a server configured for it)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from tests.support.server import BIN, ServeProcess, running_server


@pytest.fixture(scope="module")
def invite_only() -> Iterator[ServeProcess]:
    with running_server(env={"PF_SIGNUP": "invite"}) as server:
        yield server


@pytest.fixture(scope="module")
def closed() -> Iterator[ServeProcess]:
    with running_server(env={"PF_SIGNUP": "closed"}) as server:
        yield server


def test_invite_only_sign_up_needs_a_single_use_code(invite_only: ServeProcess) -> None:
    with invite_only.client() as api:
        body = {"email": "first@example.com", "password": "0123456789"}
        refused = api.post("/api/accounts", json=body)
        assert refused.status_code == 403
        assert refused.json()["field"] == "invite"
        made_up = api.post("/api/accounts", json={**body, "invite": "made-up"})
        assert made_up.status_code == 403


def test_an_invite_works_once(invite_only: ServeProcess) -> None:
    code = _issue_invite(invite_only)
    with invite_only.client() as api:
        first = api.post(
            "/api/accounts",
            json={"email": "guest@example.com", "password": "0123456789", "invite": code},
        )
        assert first.status_code == 201, first.text
        again = api.post(
            "/api/accounts",
            json={"email": "guest2@example.com", "password": "0123456789", "invite": code},
        )
        assert again.status_code == 403


def test_closed_sign_up_is_403(closed: ServeProcess) -> None:
    with closed.client() as api:
        response = api.post(
            "/api/accounts", json={"email": "x@example.com", "password": "0123456789"}
        )
    assert response.status_code == 403
    assert "closed" in response.json()["detail"]


def _issue_invite(server: ServeProcess) -> str:
    """An operator account made on the machine (`pocketfleet operator create`), then an invite."""
    email = "root@example.com"
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "create", email, "--password", "operator-password"],
        env=server.env(), check=True, capture_output=True,
    )  # fmt: skip
    with server.client() as api:
        token = api.post(
            "/api/sessions", json={"email": email, "password": "operator-password"}
        ).json()["token"]
        response = api.post("/api/invites", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 201
        code: str = response.json()["code"]
        return code
