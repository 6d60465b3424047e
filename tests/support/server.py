"""`pocketfleet serve` as a real child process, and an API client for tests.

server = ServeProcess(tmp_path / "pf", database_url=url)
server.start()
api = server.client()                  # httpx.Client on the apex host
api.post("/api/accounts", json={...})
server.instance_client("myapp")        # requests with Host: myapp.localhost:PORT
server.stop()                          # SIGTERM, like Ctrl-C: instances keep running
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from .ports import free_port
from .workers import isolation_env

BIN = Path(sys.executable).parent


def scratch_dir(prefix: str = "pf-test-") -> Path:
    """A temporary folder that instance users can traverse (pytest's own are mode 0700, and
    instances run as their own uids when the tests run as root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o711)
    return path


class ServeProcess:
    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.extra_env = env or {}
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"serve-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PF_")}
        env.update(
            PF_HTTP=f"127.0.0.1:{self.port}",
            PF_DATA_DIR=str(self.data_dir),
            PF_RECONCILE_INTERVAL_S="0.5",
            PF_LOGIN_MAX_FAILURES="5",
            PF_SFTP="off",  # tests that want SFTP give it a free port
        )
        env.update(isolation_env())
        if self.database_url:
            env["PF_DATABASE_URL"] = self.database_url
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 60) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / "pocketfleet"), "serve", "--log-level", "warning"],
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"serve did not answer within {timeout}s:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Stop the control plane only (instances keep running, by design)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def down(self) -> None:
        """`pocketfleet down`: stop serve and every instance."""
        self.stop()
        subprocess.run(
            [str(BIN / "pocketfleet"), "down"], env=self.env(), check=True, capture_output=True
        )
        self.process = None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=90, trust_env=False, **kwargs
        )

    def instance_url(self, name: str) -> str:
        return f"http://{name}.localhost:{self.port}"

    def instance_client(self, name: str) -> httpx.Client:
        """Requests to the instance through the embedded proxy (Host: NAME.localhost:PORT)."""
        return httpx.Client(
            base_url=self.url,
            headers={"Host": f"{name}.localhost:{self.port}"},
            timeout=60,
            trust_env=False,
        )


def sign_up(api: httpx.Client, email: str, password: str = "correct-horse-battery") -> str:
    """Create an account and return a session token for it."""
    created = api.post("/api/accounts", json={"email": email, "password": password})
    assert created.status_code == 201, created.text
    session = api.post("/api/sessions", json={"email": email, "password": password})
    assert session.status_code == 200, session.text
    token: str = session.json()["token"]
    return token


@contextmanager
def running_server(
    database_url: str | None = None, env: dict[str, str] | None = None
) -> Iterator[ServeProcess]:
    """`pocketfleet serve` on a fresh data folder; afterwards `pocketfleet down` stops it and
    every instance it started, and the folder is removed."""
    root = scratch_dir()
    server = ServeProcess(root / "data", database_url=database_url, env=env)
    try:
        server.start()
        yield server
    finally:
        try:
            server.down()
        finally:
            shutil.rmtree(root, ignore_errors=True)
