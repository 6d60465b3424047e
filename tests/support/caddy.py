"""A real Caddy (Debian's `caddy`) on loopback, run by a test the way systemd would run it.

caddy = CaddyServer(scratch_dir())
caddy.start()                 # admin API, HTTP and HTTPS on free loopback ports
caddy.client()                # httpx.Client to the HTTP listener
caddy.kill(); caddy.start()   # a crash and a restart: Caddy comes back with its base config
caddy.stop()
"""

from __future__ import annotations

import json
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
        self.admin_port = free_port()
        self.http_port = free_port()
        self.https_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

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
        config = self.root / "base.json"
        config.write_text(
            json.dumps(
                {
                    "admin": {"listen": self.admin, "config": {"persist": False}},
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
                httpx.get(f"http://{self.admin}/config/", timeout=1)
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

    def config(self, path: str = "/config/") -> Any:
        return httpx.get(f"http://{self.admin}{path}", timeout=5).json()

    def client(self, **kwargs: Any) -> httpx.Client:
        """Requests to Caddy's plain-HTTP listener (set `Host` per request)."""
        return httpx.Client(
            base_url=f"http://{self.http_listen}", timeout=10, trust_env=False, **kwargs
        )

    def https_get(self, host: str, path: str) -> httpx.Response:
        return https_get(self.https_port, host, path, self.root_ca)


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
