"""The dashboard's cookies: `__Host-` names under `PF_PUBLIC_SCHEME=https`, today's names over
plain http (through the real server's responses; no browser needed to read `Set-Cookie`)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.support.server import ServeProcess, running_server, sign_up

PASSWORD = "correct-horse-battery"


@pytest.fixture(scope="module")
def https_server() -> Iterator[ServeProcess]:
    # served on plain loopback here, as behind Caddy: the public scheme decides the names
    with running_server(env={"PF_PUBLIC_SCHEME": "https"}) as server:
        yield server


@pytest.fixture(scope="module")
def http_server() -> Iterator[ServeProcess]:
    with running_server() as server:
        yield server


def set_cookies(response: httpx.Response) -> dict[str, str]:
    """`Set-Cookie` headers by cookie name, each as sent."""
    found = {}
    for header in response.headers.get_list("set-cookie"):
        found[header.split("=", 1)[0]] = header
    return found


def attributes(header: str) -> dict[str, str]:
    cookie = SimpleCookie()
    cookie.load(header)
    (morsel,) = cookie.values()
    return {key: str(value) for key, value in morsel.items() if value}


def log_in(server: ServeProcess, email: str) -> tuple[httpx.Response, httpx.Response]:
    """The login page and the login form's answer, cookies carried by hand (httpx's jar would
    not send a Secure cookie over plain http)."""
    with server.client() as api:
        sign_up(api, email)
        page = api.get("/login")
        visitor = next(iter(set_cookies(page).values())).split(";", 1)[0]
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, page.text
        api.cookies.clear()
        answer = api.post(
            "/login",
            data={"email": email, "password": PASSWORD, "csrf_token": match.group(1)},
            headers={"Cookie": visitor},
        )
        return page, answer


def test_over_https_the_cookies_are_host_prefixed(https_server: ServeProcess) -> None:
    page, answer = log_in(https_server, "secure@example.com")
    visitor = set_cookies(page)
    assert list(visitor) == ["__Host-pf_visitor"]
    assert answer.status_code == 303, answer.text
    session = set_cookies(answer)["__Host-pf_session"]
    for header in (visitor["__Host-pf_visitor"], session):
        flags = attributes(header)
        assert flags["secure"] and flags["httponly"] and flags["path"] == "/"
        assert "domain" not in flags
    # the prefixed cookie is the session; an unprefixed one is not even looked at
    token = session.split(";", 1)[0].split("=", 1)[1]
    with https_server.client() as api:
        home = api.get("/instances", headers={"Cookie": f"__Host-pf_session={token}"})
        assert home.status_code == 200
        assert "secure@example.com" in home.text
        api.cookies.clear()
        plain = api.get("/instances", headers={"Cookie": f"pf_session={token}"})
        assert plain.status_code == 303
        assert plain.headers["location"].startswith("/login")


def test_over_http_the_cookies_keep_their_names(http_server: ServeProcess) -> None:
    page, answer = log_in(http_server, "plain@example.com")
    assert list(set_cookies(page)) == ["pf_visitor"]
    assert answer.status_code == 303, answer.text
    session = set_cookies(answer)["pf_session"]
    flags = attributes(session)
    assert flags["httponly"] and flags["path"] == "/" and "secure" not in flags
