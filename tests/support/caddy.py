"""A real Caddy (Debian's `caddy`) on loopback, run by a test the way systemd would run it.

caddy = CaddyServer(scratch_dir())
caddy.start()                 # admin API on a unix socket (ROOT/admin/admin.sock, folder 0700),
                              # HTTP and HTTPS on free loopback ports
caddy.client()                # httpx.Client to the HTTP listener
caddy.kill(); caddy.start()   # a crash and a restart: Caddy comes back with its base config
caddy.stop()

tcp_listen_ports(pid)         # the TCP ports a process listens on (from /proc)
curl_admin_as(socket, uid)    # the admin API asked with curl as another uid (a tenant's view)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from .ports import free_port

CADDY = shutil.which("caddy") or "/usr/bin/caddy"


class CaddyServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.http_port = free_port()
        self.https_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def admin(self) -> Path:
        """The unix socket of the admin API."""
        return self.root / "admin" / "admin.sock"

    @property
    def http_listen(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def https_listen(self) -> str:
        return f"127.0.0.1:{self.https_port}"

    @property
    def root_ca(self) -> Path:
        """Caddy's internal CA certificate (once it has issued something)."""
        return self.root / "data" / "pki" / "authorities" / "local" / "root.crt"

    def start(self, timeout: float = 10) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.admin.parent.mkdir(mode=0o700, exist_ok=True)
        config = self.root / "base.json"
        config.write_text(
            json.dumps(
                {
                    "admin": {"listen": f"unix/{self.admin}", "config": {"persist": False}},
                    "storage": {"module": "file_system", "root": str(self.root / "data")},
                }
            )
        )
        env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": str(self.root)}
        with (self.root / "caddy.log").open("ab") as log:
            self.process = subprocess.Popen(
                [CADDY, "run", "--config", str(config)], env=env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.admin_get("/config/", timeout=1)
                return
            except httpx.TransportError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"caddy did not start: {self.log()}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def log(self) -> str:
        try:
            return (self.root / "caddy.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def admin_get(self, path: str, timeout: float = 5) -> httpx.Response:
        return admin_get(self.admin, path, timeout)

    def config(self, path: str = "/config/") -> Any:
        return self.admin_get(path).json()

    def client(self, **kwargs: Any) -> httpx.Client:
        """Requests to Caddy's plain-HTTP listener (set `Host` per request)."""
        return httpx.Client(
            base_url=f"http://{self.http_listen}", timeout=10, trust_env=False, **kwargs
        )

    def https_get(self, host: str, path: str) -> httpx.Response:
        return https_get(self.https_port, host, path, self.root_ca)


def admin_get(socket: Path, path: str, timeout: float = 5) -> httpx.Response:
    """GET `path` from the Caddy admin API on the unix socket `socket` (with the empty `Host`
    Caddy requires there)."""
    transport = httpx.HTTPTransport(uds=str(socket))
    with httpx.Client(transport=transport, timeout=timeout, trust_env=False) as client:
        return client.get(f"http://caddy-admin{path}", headers={"Host": ""})


def https_get(port: int, host: str, path: str, ca: Path) -> httpx.Response:
    """GET `path` from Caddy's HTTPS listener on loopback `port` as host `host` (SNI,
    certificate check and `Host`), trusting the CA certificate `ca`."""
    transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(ca)))
    with httpx.Client(transport=transport, timeout=10, trust_env=False) as client:
        return client.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"Host": host},
            extensions={"sni_hostname": host},
        )


def tcp_listen_ports(pid: int) -> set[int]:
    """The TCP ports (IPv4 and IPv6) on which process `pid` listens: its socket inodes found in
    the LISTEN state of `/proc/net/tcp{,6}`."""
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def curl_admin_as(
    socket: Path, uid: int, path: str = "/config/"
) -> subprocess.CompletedProcess[str]:
    """`curl -v --unix-socket SOCKET` (`GET path`, empty `Host`) run as `uid` with no groups
    (`setpriv`): what any process of that uid, a tenant's hook for one, would get."""
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
         "curl", "-v", "-sS", "--max-time", "5", "--unix-socket", str(socket), "-H", "Host;",
         f"http://caddy-admin{path}"],
        capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
