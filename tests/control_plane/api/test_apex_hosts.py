"""The apex (API and dashboard) answers only its own names (DNS rebinding), against a real
server; instance hosts and the domain-verification path keep working."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from control_plane.api.apex_hosts import any_ip_address, apex_names
from control_plane.settings import Settings
from tests.support.raw_http import exchange
from tests.support.server import ServeProcess, running_server

EXTRA = "dash.example.org"


@pytest.fixture(scope="module")
def server() -> Iterator[ServeProcess]:
    with running_server(env={"PF_APEX_HOSTS": EXTRA}) as server:
        yield server


def get(server: ServeProcess, host: str, path: str = "/api/health") -> httpx.Response:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=30) as client:
        return client.get(path, headers={"Host": host})


@pytest.mark.parametrize(
    "host",
    ["localhost:{port}", "LocalHost", "127.0.0.1:{port}", "127.0.0.1", EXTRA, f"{EXTRA}:443"],
)
def test_the_apex_names_are_served(server: ServeProcess, host: str) -> None:
    response = get(server, host.format(port=server.port))
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("host", "path"),
    [
        ("rebound.attacker.example:{port}", "/api/health"),
        ("rebound.attacker.example", "/api/accounts/me"),
        ("attacker.test", "/login"),
        ("a.b.localhost:{port}", "/api/health"),  # not an instance host: not the apex either
        ("10.1.2.3:{port}", "/api/health"),  # PF_HTTP is 127.0.0.1, not every address
    ],
)
def test_other_hosts_are_misdirected(server: ServeProcess, host: str, path: str) -> None:
    response = get(server, host.format(port=server.port), path)
    assert response.status_code == 421
    assert response.json()["code"] == "misdirected_request"
    assert "PF_APEX_HOSTS" in response.json()["detail"]


def test_a_request_without_host_is_a_bad_request(server: ServeProcess) -> None:
    response = exchange(server.port, b"GET /api/health HTTP/1.0\r\n\r\n")
    assert response.status == 400
    assert response.json()["code"] == "bad_request"


def test_instance_hosts_still_reach_the_proxy(server: ServeProcess) -> None:
    response = get(server, f"ghost.localhost:{server.port}")
    assert response.status_code == 404
    assert response.json()["message"] == "No instance is served at ghost.localhost."


def test_the_domain_verification_path_is_answered_on_any_host(server: ServeProcess) -> None:
    # the HTTP proof of a custom domain is asked for on the domain itself
    response = get(server, "shop.example.com", "/.well-known/pocketfleet/some-token")
    assert response.status_code == 404
    assert response.text == "not found"  # answered by the apex, not refused


def test_the_names_come_from_the_settings() -> None:
    settings = Settings(domain="Example.COM", http="10.0.0.5:8090", apex_hosts="admin.example.net")
    assert apex_names(settings) == {
        "example.com",
        "localhost",
        "127.0.0.1",
        "[::1]",
        "10.0.0.5",
        "admin.example.net",
    }
    assert not any_ip_address(settings)
    everywhere = Settings(http="0.0.0.0:8090")
    assert "0.0.0.0" not in apex_names(everywhere)
    assert any_ip_address(everywhere)
    assert "[::1]" in apex_names(Settings(http="[::1]:8090"))
