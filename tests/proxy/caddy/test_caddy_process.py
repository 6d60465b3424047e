"""The supervised Caddy child: its admin API only on a unix socket no other uid can open (also
after pocketfleet's pushes), restart after a crash, clean stop, and a leftover Caddy of an
earlier run stopped first."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.caddy.admin import CaddyAdmin
from proxy.caddy.config import CaddyLayout
from proxy.caddy.process import CaddyProcess, CaddyStartError
from proxy.caddy.sink import CaddyRoutes
from proxy.routes import Route, RouteState
from tests.support.caddy import CADDY, admin_get, curl_admin_as, tcp_listen_ports
from tests.support.ports import free_port
from tests.support.server import scratch_dir

NOBODY = 65534


def test_the_admin_endpoint_must_be_a_unix_socket(tmp_path: Path) -> None:
    for address in ("127.0.0.1:2019", "0.0.0.0:2019", "admin.sock"):
        with pytest.raises(CaddyStartError, match="must be a unix socket"):
            CaddyProcess(CADDY, Path(address), tmp_path)


async def test_a_socket_folder_others_can_enter_is_refused() -> None:
    root = scratch_dir("pf-caddy-proc-")
    try:
        shared = root / "shared"
        shared.mkdir(mode=0o755)
        shared.chmod(0o755)
        process = CaddyProcess(CADDY, shared / "admin.sock", root / "caddy")
        with pytest.raises(CaddyStartError, match=r"open to other users \(mode 755\)"):
            await process.start()
        assert process.pid is None  # refused before anything ran
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    process = CaddyProcess("/nonexistent/caddy", tmp_path / "admin.sock", tmp_path)
    with pytest.raises(CaddyStartError, match="cannot run"):
        await process.start()


def _answers(admin: Path) -> bool:
    try:
        return admin_get(admin, "/config/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _refused(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return False
    except ConnectionRefusedError:
        return True


@pytest.mark.skipif(os.geteuid() != 0, reason="probes the socket as another uid (setpriv)")
async def test_the_admin_api_is_a_socket_no_other_uid_can_open() -> None:
    root = scratch_dir("pf-caddy-proc-")
    state = root / "caddy"
    state.mkdir(mode=0o755)  # as an older pocketfleet might have left it
    state.chmod(0o755)
    sock = state / "admin.sock"
    http_port = free_port()
    layout = CaddyLayout("localhost", "127.0.0.1:9", sock, f"127.0.0.1:{http_port}", None)
    admin = CaddyAdmin(sock)
    routes = CaddyRoutes(admin, layout)
    process = CaddyProcess(CADDY, sock, state, startup_config=routes.startup_config)
    try:
        await routes.replace_all([])  # Caddy down: marked dirty, pushed once it answers
        await process.start()
        await routes.replace_all([Route("a.localhost", "a", RouteState.STOPPED, None, "off")])
        assert process.pid is not None
        ours = (await admin.get("/config/admin"))[0]
        assert ours == {"listen": f"unix/{sock}", "config": {"persist": False}}

        # no admin API on TCP: Caddy listens on its HTTP port only, nothing on :2019
        assert tcp_listen_ports(process.pid) == {http_port}
        assert _refused(("127.0.0.1", 2019))
        # the socket is in a folder only we can enter, and itself ours only
        assert stat.S_IMODE(state.stat().st_mode) == 0o700
        assert stat.S_ISSOCK(sock.stat().st_mode) and sock.stat().st_mode & 0o077 == 0

        # another uid (what a tenant's code runs as) cannot connect; root can
        probe = await asyncio.to_thread(curl_admin_as, sock, NOBODY)
        assert probe.returncode == 7, probe.stderr  # curl: could not connect
        assert "Permission denied" in probe.stderr
        control = await asyncio.to_thread(curl_admin_as, sock, 0)
        assert control.returncode == 0, control.stderr
        assert json.loads(control.stdout)["admin"]["listen"] == f"unix/{sock}"
    finally:
        await routes.aclose()
        await process.stop()
        await admin.aclose()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_crashed_caddy_is_started_again() -> None:
    root = scratch_dir("pf-caddy-proc-")
    admin = root / "caddy" / "admin.sock"
    restored = asyncio.Event()

    async def on_restart() -> None:
        restored.set()

    process = CaddyProcess(CADDY, admin, root / "caddy", on_restart=on_restart)
    try:
        await process.start()
        first = process.pid
        assert first is not None and _answers(admin)
        assert (root / "caddy" / "caddy.pid").read_text() == str(first)

        os.kill(first, signal.SIGKILL)  # leaves its socket file behind
        await asyncio.wait_for(restored.wait(), 10)
        assert process.pid != first and process.restarts == 1
        assert await asyncio.to_thread(_answers, admin)
    finally:
        await process.stop()
        shutil.rmtree(root, ignore_errors=True)
    assert not await asyncio.to_thread(_answers, admin)
    assert not (root / "caddy" / "caddy.pid").exists()


@pytest.fixture
def leftover() -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """A Caddy an earlier `serve` left running: its pid in the state folder's pid file."""
    root = scratch_dir("pf-caddy-proc-")
    state = root / "caddy"
    state.mkdir(mode=0o700)
    config = root / "leftover.json"
    config.write_text(json.dumps({"admin": {"listen": f"unix/{state / 'admin.sock'}"}}))
    process = subprocess.Popen(
        [CADDY, "run", "--config", str(config)], env={"HOME": str(root), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    (state / "caddy.pid").write_text(str(process.pid))
    deadline = time.monotonic() + 10
    while not Path(f"/proc/{process.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # until it has exec'd caddy
    yield state, process
    if process.poll() is None:
        process.kill()
    process.wait()
    shutil.rmtree(root, ignore_errors=True)


async def test_a_leftover_caddy_is_stopped_before_starting(
    leftover: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    state, old = leftover
    admin = state / "admin.sock"
    process = CaddyProcess(CADDY, admin, state)
    try:
        await process.start()
        assert await asyncio.to_thread(old.wait, 5) is not None  # it was stopped
        assert process.pid != old.pid and await asyncio.to_thread(_answers, admin)
    finally:
        await process.stop()
