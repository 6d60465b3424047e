"""The admin API client against a real Caddy: etags as Caddy computes them, `If-Match`
refusals, and Caddy being down."""

from __future__ import annotations

import socket
import time

import pytest

from proxy.caddy.admin import CaddyAdmin, CaddyUnavailable, Conflict, etag_of, is_loopback
from tests.support.caddy import CaddyServer
from tests.support.ports import free_port


def _raw_response(address: str, path: str) -> bytes:
    """The whole HTTP/1.1 response to `GET path`, read from a bare socket. A connection reset
    is tried again: Caddy may still be swapping in the configuration just posted."""
    host, port = address.rsplit(":", 1)
    for attempt in range(20):
        try:
            with socket.create_connection((host, int(port))) as sock:
                request = f"GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
                sock.sendall(request.encode())
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                return data
        except ConnectionResetError:
            if attempt == 19:
                raise
            time.sleep(0.05)
    raise AssertionError("unreachable")


def _raw_get(address: str, path: str) -> tuple[bytes, str]:
    """GET `path` with a bare socket: the chunked body and the `Etag` trailer httpx hides."""
    data = _raw_response(address, path)
    rest = data.partition(b"\r\n\r\n")[2]
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body, rest = body + rest[:size], rest[size + 2 :]
    trailer = rest.decode().strip()
    assert trailer.lower().startswith("etag:"), trailer
    return body, trailer.split(":", 1)[1].strip()


async def test_etag_is_the_one_caddy_sends(caddy: CaddyServer) -> None:
    admin = CaddyAdmin(caddy.admin)
    try:
        await admin.post("/config/apps", {"http": {"servers": {"t": {"listen": ["127.0.0.1:0"]}}}})
        for path in ("/config/", "/config/apps/http/servers/t"):
            body, trailer = _raw_get(caddy.admin, path)
            assert etag_of(path, body) == trailer
            assert (await admin.get(path))[1] == trailer
    finally:
        await admin.delete("/config/apps")
        await admin.aclose()


async def test_a_stale_if_match_is_refused(caddy: CaddyServer) -> None:
    admin = CaddyAdmin(caddy.admin)
    routes = "/config/apps/http/servers/t/routes"
    route = {"handle": [{"handler": "static_response", "body": "x"}]}
    try:
        server = {"listen": [f"127.0.0.1:{free_port()}"], "routes": []}
        await admin.post("/config/apps", {"http": {"servers": {"t": server}}})
        _, etag = await admin.get(routes)
        await admin.post(routes, route)  # someone else's change
        with pytest.raises(Conflict):
            await admin.post(routes, route, if_match=etag)
        assert len((await admin.get(routes))[0]) == 1  # the refused change was not applied
        _, etag = await admin.get(routes)
        await admin.post(routes, route, if_match=etag)
        assert len((await admin.get(routes))[0]) == 2
    finally:
        await admin.delete("/config/apps")
        await admin.aclose()


async def test_nothing_listening_is_unavailable() -> None:
    admin = CaddyAdmin(f"127.0.0.1:{free_port()}")
    try:
        with pytest.raises(CaddyUnavailable):
            await admin.get("/config/")
    finally:
        await admin.aclose()


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1:2019") and is_loopback("[::1]:2019")
    assert is_loopback("localhost:2019")
    assert not is_loopback("0.0.0.0:2019") and not is_loopback(":2019")
    assert not is_loopback("10.0.0.5:2019")
