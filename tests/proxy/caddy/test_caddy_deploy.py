"""`deploy/`'s Caddy: its base config, its systemd unit and the settings install.sh writes
agree on one admin socket in a 0700 folder of the `caddy` user, and that layout, run for real
(Caddy as the `caddy` user, pocketfleet as root), lets root push and keeps every other uid out."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.caddy.admin import CaddyAdmin, admin_socket, open_to_others
from proxy.caddy.config import CaddyLayout
from proxy.caddy.sink import CaddyRoutes
from proxy.routes import Route, RouteState
from tests.support.caddy import CADDY, curl_admin_as, tcp_listen_ports
from tests.support.ports import free_port
from tests.support.server import scratch_dir

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
SOCKET = "/run/pocketfleet-caddy/admin.sock"
NOBODY = 65534


def _unit() -> dict[str, str]:
    text = (DEPLOY / "pocketfleet-caddy.service").read_text()
    return dict(re.findall(r"^(\w+)=(.*)$", text, re.MULTILINE))


def test_the_base_config_the_unit_and_the_settings_agree_on_one_socket() -> None:
    base = json.loads((DEPLOY / "caddy.json").read_text())
    assert base["admin"] == {"listen": f"unix/{SOCKET}", "config": {"persist": False}}
    unit = _unit()
    assert unit["User"] == "caddy"
    assert unit["RuntimeDirectory"] == Path(SOCKET).parent.name
    assert unit["RuntimeDirectoryMode"] == "0700" and unit["UMask"] == "0077"
    written = re.search(r'echo "PF_CADDY_ADMIN=(.*)"', (DEPLOY / "install.sh").read_text())
    assert written is not None and admin_socket(written.group(1)) == Path(SOCKET)


def _caddy_user() -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam("caddy")
    except KeyError:
        return None


@pytest.fixture
def deploy_caddy() -> Iterator[tuple[Path, subprocess.Popen[bytes], pwd.struct_passwd]]:
    """Caddy with deploy/caddy.json run as systemd runs pocketfleet-caddy.service: as the
    caddy user, umask 077, its socket in a 0700 folder of that user (RuntimeDirectory)."""
    user = _caddy_user()
    if os.geteuid() != 0 or user is None:
        pytest.skip("runs Caddy as the caddy user")
    root = scratch_dir("pf-caddy-deploy-")
    run = root / "run"
    run.mkdir(mode=0o700)
    os.chown(run, user.pw_uid, user.pw_gid)
    sock = run / "admin.sock"
    base = json.loads((DEPLOY / "caddy.json").read_text())
    base["admin"]["listen"] = f"unix/{sock}"
    base["storage"]["root"] = str(run / "data")
    (root / "caddy.json").write_text(json.dumps(base))
    caddy = subprocess.Popen(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups",
         CADDY, "run", "--config", str(root / "caddy.json")],
        env={"HOME": str(run), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: os.umask(0o077),
    )  # fmt: skip
    try:
        yield sock, caddy, user
    finally:
        caddy.terminate()
        caddy.wait(10)
        shutil.rmtree(root, ignore_errors=True)


async def test_the_deploy_layout_keeps_every_other_uid_out(
    deploy_caddy: tuple[Path, subprocess.Popen[bytes], pwd.struct_passwd],
) -> None:
    sock, caddy, user = deploy_caddy
    http_port = free_port()
    layout = CaddyLayout("localhost", "127.0.0.1:9", sock, f"127.0.0.1:{http_port}", None)
    admin = CaddyAdmin(sock)
    routes = CaddyRoutes(admin, layout)
    try:
        for _ in range(500):  # until Caddy answers (a push to a Caddy not up yet fails)
            await routes.replace_all([Route("a.localhost", "a", RouteState.STOPPED, None, "off")])
            if await routes.holds_epoch():
                break
            assert caddy.poll() is None, "caddy exited"
            await asyncio.sleep(0.02)
        assert await routes.holds_epoch()  # root (the control plane) pushed its config
        assert (await admin.get("/config/admin"))[0]["listen"] == f"unix/{sock}"
        assert sock.stat().st_uid == user.pw_uid and open_to_others(sock, owned=False) is None
        assert tcp_listen_ports(caddy.pid) == {http_port}  # no admin API on TCP
        probe = await asyncio.to_thread(curl_admin_as, sock, NOBODY)
        assert probe.returncode == 7 and "Permission denied" in probe.stderr, probe.stderr
    finally:
        await routes.aclose()
        await admin.aclose()
