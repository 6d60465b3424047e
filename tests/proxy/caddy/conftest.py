"""A real Caddy for the Caddy proxy tests (one per module, restarted by the tests that crash
it), and the pocketfleet layout pointing at it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from proxy.caddy.config import CaddyLayout
from tests.support.caddy import CaddyServer
from tests.support.server import scratch_dir


@pytest.fixture(scope="module")
def caddy() -> Iterator[CaddyServer]:
    root = scratch_dir("pf-caddy-")
    server = CaddyServer(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def layout_for(caddy: CaddyServer, access_log: str | None = None) -> CaddyLayout:
    """Caddy's listeners; the control plane is a closed port (nothing here needs it)."""
    return CaddyLayout(
        domain="localhost",
        control_plane="127.0.0.1:9",
        admin_socket=caddy.admin,
        http_listen=caddy.http_listen,
        https_listen=caddy.https_listen,
        tls_issuer="internal",
        ask_url="http://127.0.0.1:9/api/tls/ask",
        access_log=access_log,
    )
