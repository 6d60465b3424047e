"""A tenant's hook goes for Caddy's admin API (which could rewrite every route and TLS policy of
the fleet): on loopback TCP (:2019, Caddy's default), and on its unix socket by path
(`PF_DATA_DIR/caddy/admin.sock`), with `$http`, `curl` and a raw socket. None of it answers
inside the sandbox, while the control plane (root) uses the socket all along.

Its own `pocketfleet serve` with a supervised Caddy in front (`PF_PROXY=caddy`,
`PF_START_CADDY=true`), as in tests/control_plane/test_caddy_serve.py; the attacker's hook is
called through Caddy."""

from __future__ import annotations

import json
import shlex
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.security.hostile import Hostile, Tenant
from tests.support.caddy import admin_get
from tests.support.ports import free_port
from tests.support.server import ServeProcess, running_server

CURL_IN_SANDBOX = shutil.which("curl", path="/usr/bin")
PYTHON_IN_SANDBOX = shutil.which("python3", path="/usr/bin")
CONNECT_UNIX = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
    s.sendall(b"GET /config/ HTTP/1.0\\r\\nHost:\\r\\n\\r\\n")
    print("connected:", s.recv(200))
except OSError as err:
    print("refused:", err)
"""


@dataclass
class CaddyFleet:
    serve: ServeProcess
    http_port: int
    hostile: Hostile

    @property
    def admin_socket(self) -> Path:
        bootstrap = json.loads((self.serve.data_dir / "caddy" / "bootstrap.json").read_text())
        listen: str = bootstrap["admin"]["listen"]
        return Path(listen.removeprefix("unix/"))


@pytest.fixture(scope="module")
def fleet() -> Iterator[CaddyFleet]:
    http_port, https_port = free_port(), free_port()
    env = {
        "PF_PROXY": "caddy",
        "PF_START_CADDY": "true",
        "PF_CADDY_HTTP": f"127.0.0.1:{http_port}",
        "PF_CADDY_HTTPS": f"127.0.0.1:{https_port}",
        "PF_CADDY_CHECK_INTERVAL_S": "0.2",
        "PF_IDLE_TIMEOUT_S": "0",
    }
    with running_server(env=env) as serve:
        tenant = Tenant(serve, "caddyattacker")

        def via_caddy(name: str) -> httpx.Client:
            return httpx.Client(
                base_url=f"http://127.0.0.1:{http_port}",
                headers={"Host": f"{name}.localhost"},
                timeout=60,
                trust_env=False,
            )

        hostile = Hostile.create(tenant, "evilcaddy", client=lambda: via_caddy("evilcaddy"))
        try:
            yield CaddyFleet(serve, http_port, hostile)
        finally:
            tenant.api.close()


def test_caddy_admin_on_loopback_tcp_does_not_answer(fleet: CaddyFleet) -> None:
    for port in (2019, 2020):
        got = fleet.hostile.http(f"http://127.0.0.1:{port}/config/")
        assert not got.ok and "connection refused" in got.error, got
    with pytest.raises(ConnectionRefusedError):  # nothing there on the host either
        socket.create_connection(("127.0.0.1", 2019), timeout=1).close()
    fleet.hostile.assert_alive()


def test_caddy_admin_socket_does_not_exist_in_the_sandbox(fleet: CaddyFleet) -> None:
    sock = fleet.admin_socket
    assert admin_get(sock, "/config/admin").status_code == 200  # root uses it meanwhile
    hostile = fleet.hostile
    for path in (sock, sock.parent / "bootstrap.json"):
        got = hostile.read(path)
        assert got.refused and "no such file" in got.error, got
    assert hostile.listdir(sock.parent).refused
    if CURL_IN_SANDBOX is not None:
        curl = hostile.sh(f"curl -sS --max-time 5 --unix-socket {sock} http://x/config/")
        assert curl.code != 0 and '"apps"' not in curl.output, curl
    if PYTHON_IN_SANDBOX is not None:
        raw = hostile.sh(f"python3 -c {shlex.quote(CONNECT_UNIX)} {sock}")
        assert raw.output.startswith("refused:") and "No such file" in raw.output, raw
    hostile.assert_alive()


def test_caddy_still_serves_the_routes_it_was_given(fleet: CaddyFleet) -> None:
    """After the attacks: the attacker's instance is served through Caddy, and the apex too."""
    with httpx.Client(base_url=f"http://127.0.0.1:{fleet.http_port}", trust_env=False) as caddy:
        apex = caddy.get("/api/health", headers={"Host": "localhost"})
        assert apex.status_code == 200, apex.text
    fleet.hostile.assert_alive()
