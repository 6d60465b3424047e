"""Where the control plane looks for Caddy's admin API (`PF_CADDY_ADMIN`): a unix socket,
by default under PF_DATA_DIR; TCP refused; an external Caddy's socket folder checked."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from control_plane.caddy_frontend import CaddyFrontend, admin_socket_for
from control_plane.settings import Settings
from proxy.activity import ActivityTracker
from proxy.caddy.admin import AdminAddressError
from proxy.routes import RouteTable
from tests.support.server import scratch_dir


def test_the_default_socket_is_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    assert admin_socket_for(settings) == tmp_path / "data" / "caddy" / "admin.sock"
    relative = Settings(data_dir=Path("pf_data"))
    assert admin_socket_for(relative) == (Path.cwd() / "pf_data" / "caddy" / "admin.sock")


@pytest.mark.parametrize(
    "address", ["unix//run/pocketfleet-caddy/admin.sock", "/run/pocketfleet-caddy/admin.sock"]
)
def test_an_explicit_socket(address: str) -> None:
    settings = Settings(caddy_admin=address)
    assert admin_socket_for(settings) == Path("/run/pocketfleet-caddy/admin.sock")


@pytest.mark.parametrize("address", ["127.0.0.1:2019", "localhost:2019", "0.0.0.0:2019"])
def test_a_tcp_admin_address_is_refused(address: str) -> None:
    settings = Settings(proxy="caddy", caddy_admin=address)
    with pytest.raises(AdminAddressError, match="must be a unix socket"):
        CaddyFrontend(settings, RouteTable(), ActivityTracker())


async def test_an_external_caddy_socket_open_to_others_is_warned_about(
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = scratch_dir("pf-caddy-frontend-")
    try:
        folder = root / "run"
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
        settings = Settings(
            data_dir=root / "data", proxy="caddy", caddy_admin=str(folder / "admin.sock")
        )
        frontend = CaddyFrontend(settings, RouteTable(), ActivityTracker())
        with caplog.at_level(logging.WARNING, logger="control_plane.caddy_frontend"):
            await frontend.open({})
            await frontend.aclose()
        assert "may be open to other users" in caplog.text and "mode 755" in caplog.text

        caplog.clear()
        folder.chmod(0o700)
        frontend = CaddyFrontend(settings, RouteTable(), ActivityTracker())
        with caplog.at_level(logging.WARNING, logger="control_plane.caddy_frontend"):
            await frontend.open({})
            await frontend.aclose()
        assert "open to other users" not in caplog.text
    finally:
        shutil.rmtree(root, ignore_errors=True)
