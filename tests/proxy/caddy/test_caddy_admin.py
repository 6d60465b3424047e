"""The admin API client against a real Caddy on its unix socket: etags as Caddy computes them,
`If-Match` refusals, Caddy being down, and the admin addresses refused (TCP)."""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

import httpx
import pytest

from proxy.caddy.admin import (
    SUN_PATH_MAX,
    AdminAddressError,
    CaddyAdmin,
    CaddyRefused,
    CaddyUnavailable,
    Conflict,
    admin_socket,
    etag_of,
    open_to_others,
)
from tests.support.caddy import CaddyServer
from tests.support.ports import free_port
from tests.support.server import scratch_dir


def _raw_response(address: Path, path: str, host: str = "") -> bytes:
    """The whole HTTP/1.1 response to `GET path` on the unix socket `address`, read from a
    bare socket. A connection reset is tried again: Caddy may still be swapping in the
    configuration just posted."""
    for attempt in range(20):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.connect(str(address))
                request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
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


def _raw_get(address: Path, path: str) -> tuple[bytes, str]:
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


async def test_nothing_listening_is_unavailable(tmp_path: Path) -> None:
    admin = CaddyAdmin(tmp_path / "nobody.sock")
    try:
        with pytest.raises(CaddyUnavailable):
            await admin.get("/config/")
    finally:
        await admin.aclose()


def test_caddy_takes_only_an_empty_host_on_its_socket(caddy: CaddyServer) -> None:
    """Caddy 2.6's DNS-rebinding check on a unix socket (no `origins`): the client must send an
    empty `Host`, as `CaddyAdmin` does."""
    assert _raw_response(caddy.admin, "/config/").startswith(b"HTTP/1.1 200")
    refused = _raw_response(caddy.admin, "/config/", host="localhost")
    assert refused.startswith(b"HTTP/1.1 403") and b"host not allowed" in refused


async def test_the_transport_seam_replaces_the_socket() -> None:
    """Tests may give another transport: it is used instead of connecting to the socket."""
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path} host={request.headers['host']!r}")
        return httpx.Response(403, json={"error": "no"})

    admin = CaddyAdmin(Path("/nonexistent.sock"), transport=httpx.MockTransport(handler))
    try:
        with pytest.raises(CaddyRefused, match="403 no"):
            await admin.get("/config/")
    finally:
        await admin.aclose()
    assert seen == ["GET /config/ host=''"]


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1:2019", "must be a unix socket"),
        ("localhost:2019", "must be a unix socket"),
        ("[::1]:2019", "must be a unix socket"),
        (":2019", "must be a unix socket"),
        ("tcp/127.0.0.1:2019", "must be a unix socket"),
        ("unix/relative.sock", "absolute path"),
        ("admin.sock", "must be a unix socket"),
        ("/" + "x" * SUN_PATH_MAX, "at most 107"),
    ],
)
def test_admin_addresses_other_than_a_unix_socket_are_refused(address: str, reason: str) -> None:
    with pytest.raises(AdminAddressError, match=reason):
        admin_socket(address)


def test_admin_socket_addresses() -> None:
    assert admin_socket("unix//run/pocketfleet-caddy/admin.sock") == Path(
        "/run/pocketfleet-caddy/admin.sock"
    )
    assert admin_socket("/var/lib/pocketfleet/caddy/admin.sock") == Path(
        "/var/lib/pocketfleet/caddy/admin.sock"
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="gives a folder to another uid")
def test_a_socket_folder_open_to_others_is_reported() -> None:
    root = scratch_dir("pf-caddy-sock-")
    try:
        folder = root / "run"
        folder.mkdir(mode=0o700)
        assert open_to_others(folder / "admin.sock") is None
        folder.chmod(0o711)
        assert "open to other users (mode 711)" in str(open_to_others(folder / "admin.sock"))
        folder.chmod(0o700)
        os.chown(folder, 65534, 65534)
        assert "belongs to uid 65534" in str(open_to_others(folder / "admin.sock"))
        assert open_to_others(folder / "admin.sock", owned=False) is None  # Caddy's own user
    finally:
        shutil.rmtree(root, ignore_errors=True)
