"""A tenant squats a sleeping instance's port: while another tenant's instance hibernates, a
listener started from the attacker's hook holds its port, answers any request like a healthy
PocketBase, and names the victim's data folder on its command line (the old adoption matched
by command line). The victim's next visitor must get the victim's own data (woken on another
port), and nothing the visitor sends may reach the squatter."""

from __future__ import annotations

import shlex
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

from tests.security.hostile import Hostile, Tenant, Victim, unique
from tests.support.ports import wait_for_port
from tests.support.server import ServeProcess

PYTHON_IN_SANDBOX = shutil.which("python3", path="/usr/bin")  # /usr is visible in a sandbox

# A listener as any binary a tenant runs could be (here /usr/bin/python3, which every sandbox
# sees): it answers everything like a healthy PocketBase and notes what it was sent.
SQUATTER = """
import http.server, json, sys
class Squat(http.server.BaseHTTPRequestHandler):
    def answer(self):
        size = int(self.headers.get("Content-Length") or 0)
        with open("squatted.log", "a") as log:
            log.write(json.dumps([self.command, self.path, self.rfile.read(size).decode()]) + "\\n")
        body = json.dumps({"code": 200, "message": "API is healthy.", "squatted": True,
                           "token": "squatter", "items": [{"v": "squatted"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = answer
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Squat).serve_forever()
"""


def port_of(serve: ServeProcess, instance_id: str) -> int:
    """The instance's port in the control DB (read as root)."""
    with sqlite3.connect(f"file:{serve.data_dir / 'control.db'}?mode=ro", uri=True) as db:
        (port,) = db.execute("SELECT port FROM instance WHERE id = ?", (instance_id,)).fetchone()
    return int(port)


def listening_ports(proc_net_tcp: str) -> set[int]:
    """The ports in LISTEN state in a /proc/net/tcp text."""
    lines = proc_net_tcp.splitlines()[1:]
    return {
        int(f[1].rsplit(":", 1)[1], 16) for f in (line.split() for line in lines) if f[3] == "0A"
    }


@pytest.mark.skipif(PYTHON_IN_SANDBOX is None, reason="no /usr/bin/python3 to listen with")
def test_a_squatted_port_never_serves_a_sleeping_instances_visitors(
    hostile: Hostile, victim_tenant: Tenant, serve: ServeProcess
) -> None:
    sleeper = Victim.create(victim_tenant, unique("sleeper"))
    name = sleeper.instance.name
    port = port_of(serve, sleeper.instance.id)
    # The network is shared: a hook learns every listening port from /proc/net/tcp.
    net = hostile.read("/proc/net/tcp")
    assert net.ok and port in listening_ports(net.text)

    slept = victim_tenant.api.post(f"/api/instances/{name}/hibernate")
    assert slept.status_code == 200 and slept.json()["status"] == "hibernated", slept.text
    data_dir = sleeper.instance.folder / "pb_data"
    squat = hostile.sh(
        f"python3 -c {shlex.quote(SQUATTER)} {port} serve --dir={data_dir} --http=127.0.0.1:{port}"
        " > squatter.err 2>&1 & echo $! > squatter.pid"
    )
    assert squat.code == 0, squat.output
    wait_for_port(port)

    # the visitor signs in (its password must not reach the squatter) and reads its data
    assert sleeper.secrets_seen() == [sleeper.secret]
    moved = port_of(serve, sleeper.instance.id)
    assert moved != port
    # recorded `running` once the woken requests are answered (within 0.5 s of the answer)
    deadline = time.monotonic() + 5
    while victim_tenant.row(name)["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert victim_tenant.row(name)["status"] == "running"

    sent = Path(hostile.instance.folder / "squatted.log")
    assert not sent.exists() or sent.read_text() == "", sent.read_text()
    assert hostile.sh("kill $(cat squatter.pid)").code == 0
    hostile.assert_alive()
