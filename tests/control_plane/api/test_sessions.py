"""Login throttling through the real API. Its own module, so its own server: the per-address
limit it trips would refuse the logins of other tests."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import httpx
import pytest

from tests.support.server import ServeProcess, sign_up

_emails = itertools.count()


def email() -> str:
    return f"throttle{next(_emails)}@example.com"


@pytest.fixture
def api(serve: ServeProcess) -> Iterator[httpx.Client]:
    with serve.client() as client:
        yield client


def test_repeated_failed_logins_for_one_email_are_429(api: httpx.Client) -> None:
    address = email()
    sign_up(api, address)
    codes = [
        api.post("/api/sessions", json={"email": address, "password": f"wrong-{i}"}).status_code
        for i in range(6)
    ]
    assert codes[:5] == [401] * 5
    assert codes[5] == 429
    # even the right password waits until the window passes
    blocked = api.post(
        "/api/sessions", json={"email": address, "password": "correct-horse-battery"}
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) > 0


def test_repeated_failed_logins_from_one_address_are_429(api: httpx.Client) -> None:
    # 5 failures per email, 20 per address: spread over distinct emails from one client
    codes = [
        api.post("/api/sessions", json={"email": email(), "password": "wrong-pass"}).status_code
        for _ in range(21)
    ]
    # every email is new, so only the per-address limit can refuse (earlier tests of this
    # module already failed a few times from this address)
    assert 429 in codes
    first_refusal = codes.index(429)
    assert set(codes[:first_refusal]) == {401}
    assert set(codes[first_refusal:]) == {429}
