"""Whose `X-Forwarded-For` is believed by default (the behaviour itself, through a real server:
test_login_throttling.py)."""

from __future__ import annotations

from control_plane.api.client_address import LOOPBACK, trusted_proxies
from control_plane.settings import Settings


def test_behind_caddy_loopback_is_the_proxy() -> None:
    # Caddy dials PF_HTTP on loopback: without this every client would be 127.0.0.1
    assert trusted_proxies(Settings(proxy="caddy")) == list(LOOPBACK)


def test_with_the_embedded_proxy_clients_are_their_own_peers() -> None:
    assert trusted_proxies(Settings(proxy="embedded")) == []


def test_the_operator_names_the_proxies() -> None:
    settings = Settings(proxy="caddy", trusted_proxies="10.0.0.0/8, 192.0.2.1")
    assert trusted_proxies(settings) == ["10.0.0.0/8", "192.0.2.1/32"]
    assert trusted_proxies(Settings(proxy="caddy", trusted_proxies="")) == []
