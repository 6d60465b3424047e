"""An invite code is redeemed once, even by concurrent sign-ups (both control-database
backends, on a server with `PF_SIGNUP=invite`)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import BIN, ServeProcess, running_server

CONCURRENT = 12


@pytest.fixture(scope="module")
def invite_only(database_url: str | None) -> Iterator[ServeProcess]:
    with running_server(database_url=database_url, env={"PF_SIGNUP": "invite"}) as server:
        yield server


@pytest.fixture(scope="module")
def operator_token(invite_only: ServeProcess) -> str:
    email, password = "root@example.com", "operator-password"
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "create", email, "--password", password],
        env=invite_only.env(), check=True, capture_output=True,
    )  # fmt: skip
    with invite_only.client() as api:
        response = api.post("/api/sessions", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        token: str = response.json()["token"]
        return token


def new_invite(server: ServeProcess, token: str) -> str:
    with server.client(token) as api:
        response = api.post("/api/invites")
        assert response.status_code == 201, response.text
        code: str = response.json()["code"]
        return code


async def test_concurrent_sign_ups_with_one_code_make_one_account(
    invite_only: ServeProcess, operator_token: str
) -> None:
    code = new_invite(invite_only, operator_token)

    async def sign_up(client: httpx.AsyncClient, n: int) -> httpx.Response:
        body = {"email": f"racer{n}@example.com", "password": "0123456789", "invite": code}
        return await client.post("/api/accounts", json=body)

    async with httpx.AsyncClient(base_url=invite_only.url, timeout=90, trust_env=False) as client:
        responses = await asyncio.gather(*(sign_up(client, n) for n in range(CONCURRENT)))
    statuses = sorted(response.status_code for response in responses)
    assert statuses == [201] + [403] * (CONCURRENT - 1), [r.text for r in responses]
    refused = next(response for response in responses if response.status_code == 403)
    assert refused.json()["field"] == "invite"

    # only the winner has an account: the others' emails are free again
    winner = next(response for response in responses if response.status_code == 201)
    with invite_only.client(operator_token) as api:
        emails = {account["email"] for account in api.get("/api/accounts").json()}
    racers = {email for email in emails if email.startswith("racer")}
    assert racers == {winner.json()["email"]}


async def test_a_redeemed_code_refuses_the_next_sign_up(
    invite_only: ServeProcess, operator_token: str
) -> None:
    code = new_invite(invite_only, operator_token)
    async with httpx.AsyncClient(base_url=invite_only.url, timeout=90, trust_env=False) as client:
        body = {"email": "once@example.com", "password": "0123456789", "invite": code}
        assert (await client.post("/api/accounts", json=body)).status_code == 201
        again = {**body, "email": "twice@example.com"}
        assert (await client.post("/api/accounts", json=again)).status_code == 403
        # a refused redemption leaves nothing behind: the email can sign up with a new code
        fresh = {**again, "invite": new_invite(invite_only, operator_token)}
        assert (await client.post("/api/accounts", json=fresh)).status_code == 201
