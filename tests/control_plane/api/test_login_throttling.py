"""Login throttling by the real client address, through the real API and dashboard: a server
behind a trusted proxy (loopback, as Caddy is: `PF_TRUSTED_PROXIES`), where each test claims
its own client addresses with `X-Forwarded-For`, and a server with no trusted proxy, where
that header is ignored. (The throttle's rules themselves: tests/control_plane/
test_login_throttle.py.)"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import ServeProcess, running_server, sign_up

PASSWORD = "correct-horse-battery"
_emails = itertools.count()
_hosts = itertools.count(1)


def email() -> str:
    return f"door{next(_emails)}@example.com"


def address() -> str:
    """A fresh client address (TEST-NET-3), so that no test sees another's failures."""
    n = next(_hosts)
    return f"203.0.113.{n}" if n < 255 else f"198.51.100.{n - 254}"


@pytest.fixture(scope="module")
def behind_proxy() -> Iterator[ServeProcess]:
    env = {"PF_TRUSTED_PROXIES": "127.0.0.1", "PF_LOGIN_MAX_DELAY_S": "0.1"}
    with running_server(env=env) as server:
        yield server


@pytest.fixture(scope="module")
def direct() -> Iterator[ServeProcess]:
    with running_server() as server:
        yield server


def log_in(api: httpx.Client, who: str, password: str, forwarded_for: str) -> httpx.Response:
    return api.post(
        "/api/sessions",
        json={"email": who, "password": password},
        headers={"X-Forwarded-For": forwarded_for},
    )


def test_a_hostile_client_does_not_lock_the_owner_out(behind_proxy: ServeProcess) -> None:
    owner, hostile, home = email(), address(), address()
    with behind_proxy.client() as api:
        sign_up(api, owner)
        codes = [log_in(api, owner, f"guess-{i}", hostile).status_code for i in range(6)]
        assert codes == [401] * 5 + [429]
        refused = log_in(api, owner, PASSWORD, hostile)  # even the right password, from there
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 0
        welcome = log_in(api, owner, PASSWORD, home)
        assert welcome.status_code == 200, welcome.text


def test_an_email_failing_from_many_addresses_still_lets_its_owner_in(
    behind_proxy: ServeProcess,
) -> None:
    owner = email()
    with behind_proxy.client() as api:
        sign_up(api, owner)
        for _ in range(3):  # a botnet: 3 addresses, each up to its limit for this email
            hostile = address()
            assert {log_in(api, owner, "guess", hostile).status_code for _ in range(5)} == {401}
        # slowed down (PF_LOGIN_MAX_DELAY_S), never refused for the email alone
        assert log_in(api, owner, PASSWORD, address()).status_code == 200


def test_only_the_right_most_untrusted_hop_counts(behind_proxy: ServeProcess) -> None:
    owner, hostile = email(), address()
    with behind_proxy.client() as api:
        sign_up(api, owner)
        for i in range(5):  # the client forges a new left-most address every time
            forged = f"{address()}, {hostile}"
            assert log_in(api, owner, f"guess-{i}", forged).status_code == 401
        assert log_in(api, owner, "guess", f"192.0.2.77, {hostile}").status_code == 429
        # a trusted proxy's own hop on the right is skipped: the client is still `hostile`
        assert log_in(api, owner, "guess", f"{hostile}, 127.0.0.1").status_code == 429


async def test_concurrent_wrong_logins_pass_the_limit_exactly(behind_proxy: ServeProcess) -> None:
    owner, hostile = email(), address()
    with behind_proxy.client() as api:
        sign_up(api, owner)

    async def attempt(client: httpx.AsyncClient, i: int) -> int:
        response = await client.post(
            "/api/sessions",
            json={"email": owner, "password": f"guess-{i}"},
            headers={"X-Forwarded-For": hostile},
        )
        return response.status_code

    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(
        base_url=behind_proxy.url, timeout=90, trust_env=False, limits=limits
    ) as client:
        codes = await asyncio.gather(*(attempt(client, i) for i in range(200)))
    # each attempt is counted before its (slow) password check: 5 checked, 195 refused
    assert (codes.count(401), codes.count(429)) == (5, 195)


def test_the_dashboard_login_is_throttled_by_the_same_address(
    behind_proxy: ServeProcess,
) -> None:
    owner, hostile, home = email(), address(), address()
    with behind_proxy.client() as api:
        sign_up(api, owner)
        for i in range(5):
            assert log_in(api, owner, f"guess-{i}", hostile).status_code == 401
        assert dashboard_login(api, owner, PASSWORD, hostile).status_code == 429
        assert dashboard_login(api, owner, PASSWORD, home).status_code == 303


def dashboard_login(
    api: httpx.Client, who: str, password: str, forwarded_for: str
) -> httpx.Response:
    api.cookies.clear()
    page = api.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, page.text
    return api.post(
        "/login",
        data={"email": who, "password": password, "csrf_token": match.group(1)},
        headers={"X-Forwarded-For": forwarded_for},
    )


def test_x_forwarded_for_is_ignored_from_an_untrusted_peer(direct: ServeProcess) -> None:
    owner = email()
    with direct.client() as api:
        sign_up(api, owner)
        for i in range(5):
            assert log_in(api, owner, f"guess-{i}", address()).status_code == 401
        # every attempt came from 127.0.0.1, whatever the header claimed
        assert log_in(api, owner, PASSWORD, address()).status_code == 429
