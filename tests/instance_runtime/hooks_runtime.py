"""A real runtime process with a `pb_hooks/` folder, for the Python hooks tests.

with HooksRuntime.started({"10_main.py": SOURCE}, env={...}) as rt:
    rt.client().get("/api/hello/ann")
    rt.write_hook("10_main.py", NEW_SOURCE)   # the runtime reloads it (polled every 0.1 s)
    rt.wait_for_log("pb_hooks: 1 file(s) loaded")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.instance_runtime.runtime_process import RuntimeProcess
from tests.support.server import scratch_dir

T = TypeVar("T")

POLL_INTERVAL = "0.1"


class HooksRuntime(RuntimeProcess):
    def __init__(self, root: Path, env: Mapping[str, str] | None = None) -> None:
        super().__init__(root)
        self.hooks_dir = root / "pb_hooks"
        self.hooks_dir.mkdir(exist_ok=True)
        self.env = dict(env or {})
        self.log_path = root / "runtime.log"

    def write_hook(self, name: str, source: str) -> None:
        """Write `pb_hooks/NAME` at once (through a hidden temporary file and a rename)."""
        path = self.hooks_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(textwrap.dedent(source))
        os.replace(tmp, path)

    def remove_hook(self, name: str) -> None:
        (self.hooks_dir / name).unlink()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_mark(self) -> int:
        return len(self.log())

    def wait_for_log(self, text: str, *, since: int = 0, timeout: float = 15) -> str:
        return wait_until(lambda: self.log()[since:], lambda out: text in out, timeout=timeout)

    def start(self) -> None:
        log = self.log_path.open("ab")
        env = {**os.environ, "PF_HOOKS_POLL_INTERVAL": POLL_INTERVAL, **self.env}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "instance_runtime", "serve", "--dir", str(self.data_dir),
             "--http", f"127.0.0.1:{self.port}", "--hooksDir", str(self.hooks_dir)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, self.log()
            try:
                if httpx.get(f"{self.url}/api/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "runtime did not become healthy"
            time.sleep(0.05)

    @classmethod
    @contextmanager
    def started(  # type: ignore[override]  # other parameters than RuntimeProcess.started
        cls,
        files: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        setup: Callable[[HooksRuntime], None] | None = None,
    ) -> Iterator[HooksRuntime]:
        """A runtime whose `pb_hooks/` holds `files` when it starts (`setup(rt)` runs before,
        e.g. to create collections with the runtime stopped)."""
        root = scratch_dir("pf-hooks-")
        runtime = cls(root, env)
        try:
            for name, source in (files or {}).items():
                runtime.write_hook(name, source)
            runtime.upsert_superuser()
            if setup is not None:
                setup(runtime)
            runtime.start()
            yield runtime
        finally:
            runtime.stop()
            shutil.rmtree(root, ignore_errors=True)


def wait_until(
    probe: Callable[[], T], done: Callable[[T], bool], *, timeout: float = 15, every: float = 0.05
) -> T:
    """`probe()` until `done(result)`; the last result (asserting `done`) after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last: {result!r}")
        time.sleep(every)


def create_collection(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    made = client.post("/api/collections", json=body)
    assert made.status_code == 200, made.text
    created: dict[str, Any] = made.json()
    return created


def create_user(client: httpx.Client, email: str, password: str = "user-pass-1234") -> str:
    """A `users` record; returns its auth token."""
    made = client.post(
        "/api/collections/users/records",
        json={"email": email, "password": password, "passwordConfirm": password},
    )
    assert made.status_code == 200, made.text
    auth = client.post(
        "/api/collections/users/auth-with-password",
        json={"identity": email, "password": password},
    )
    assert auth.status_code == 200, auth.text
    token: str = auth.json()["token"]
    return token
