"""A real `python -m instance_runtime serve` process on a scratch data folder, for API tests.

with RuntimeProcess.started() as rt:
    rt.client(superuser=True).get("/api/collections")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.server import scratch_dir

EMAIL = "admin@example.com"
PASSWORD = "admin-pass-1234"


class RuntimeProcess:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "pb_data"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self._token = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def upsert_superuser(self, email: str = EMAIL, password: str = PASSWORD) -> None:
        subprocess.run(
            [sys.executable, "-m", "instance_runtime", "superuser", "upsert", email, password,
             "--dir", str(self.data_dir)],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def start(self) -> None:
        log = (self.root / "runtime.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "instance_runtime", "serve", "--dir", str(self.data_dir),
             "--http", f"127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, (self.root / "runtime.log").read_text()
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "runtime did not become healthy"
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self.process = None

    def token(self) -> str:
        if not self._token:
            response = httpx.post(
                f"{self.url}/api/collections/_superusers/auth-with-password",
                json={"identity": EMAIL, "password": PASSWORD},
            )
            assert response.status_code == 200, response.text
            self._token = response.json()["token"]
        return self._token

    def client(self, *, superuser: bool = False, token: str = "") -> httpx.Client:
        headers: dict[str, Any] = {}
        if superuser or token:
            headers["Authorization"] = token or self.token()
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    @classmethod
    @contextmanager
    def started(cls) -> Iterator[RuntimeProcess]:
        root = scratch_dir("pf-runtime-")
        runtime = cls(root)
        try:
            runtime.upsert_superuser()
            runtime.start()
            yield runtime
        finally:
            runtime.stop()
            shutil.rmtree(root, ignore_errors=True)
