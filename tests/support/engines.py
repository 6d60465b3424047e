"""The two engines of an instance as plain child processes: the real PocketBase binary and our
own runtime (`pocketfleet runtime serve`), each on a fresh data folder with one superuser.

    with running_engine("pocketbase", root, "admin@example.com", "pass-1234567") as engine:
        httpx.get(f"{engine.url}/api/health")

``start_engine`` / ``EngineProcess.stop`` do the same without a ``with`` block. The data folder
is laid out as an instance's: ``root/{pb_data,pb_migrations,pb_hooks,pb_public}``.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from .ports import free_port

Engine = Literal["pocketbase", "pocketfleet"]
ENGINES: tuple[Engine, ...] = ("pocketbase", "pocketfleet")

BIN = Path(sys.executable).parent
POCKETBASE = BIN / "pocketbase"
POCKETFLEET = BIN / "pocketfleet"


class EngineStartError(RuntimeError):
    """An engine did not come up; the message carries the end of its log."""


@functools.cache
def pocketfleet_runtime_available() -> bool:
    """True once ``pocketfleet runtime`` has a ``serve`` command (its ``--help`` succeeds)."""
    try:
        result = subprocess.run(
            [str(POCKETFLEET), "runtime", "serve", "--help"],
            capture_output=True,
            timeout=60,
            env=_clean_env(),
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _clean_env() -> dict[str, str]:
    """The environment without the control plane's settings (they must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PF_")}
    env.setdefault("NO_COLOR", "1")
    return env


def _layout(root: Path) -> dict[str, Path]:
    return {name: root / f"pb_{name}" for name in ("data", "migrations", "hooks", "public")}


def superuser_command(engine: Engine, root: Path, email: str, password: str) -> list[str]:
    data = str(_layout(root)["data"])
    if engine == "pocketbase":
        return [str(POCKETBASE), "superuser", "upsert", email, password, "--dir", data]
    return [str(POCKETFLEET), "runtime", "superuser", "upsert", email, password, "--dir", data]


def serve_command(engine: Engine, root: Path, port: int) -> list[str]:
    dirs = _layout(root)
    http = f"127.0.0.1:{port}"
    if engine == "pocketbase":
        command = [str(POCKETBASE), "serve", "--http", http, "--dir", str(dirs["data"])]
        for name in ("migrations", "hooks", "public"):
            command += [f"--{name}Dir", str(dirs[name])]
        return command
    return [str(POCKETFLEET), "runtime", "serve", "--dir", str(dirs["data"]), "--http", http]


@dataclass
class EngineProcess:
    engine: Engine
    root: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while True:
                if self.process.poll() is not None:
                    raise EngineStartError(
                        f"{self.engine} exited with {self.process.returncode} before it was "
                        f"healthy; log {self.log_path}:\n{self.log_tail()}"
                    )
                try:
                    if client.get(f"{self.url}/api/health").status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise EngineStartError(
                        f"{self.engine} not healthy on {self.url} after {timeout}s; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.05)

    def stop(self, timeout: float = 10) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_engine(
    engine: Engine, root: Path, email: str, password: str, *, timeout: float = 30
) -> EngineProcess:
    """Create the superuser on a fresh folder ``root``, serve, and wait until healthy."""
    root.mkdir(parents=True, exist_ok=True)
    env = _clean_env()
    upsert = subprocess.run(
        superuser_command(engine, root, email, password),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if upsert.returncode != 0:
        raise EngineStartError(
            f"{engine} superuser upsert failed ({upsert.returncode}): "
            f"{upsert.stdout.strip()} {upsert.stderr.strip()}"
        )
    port = free_port()
    log_path = root / f"{engine}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            serve_command(engine, root, port), stdout=log, stderr=subprocess.STDOUT, env=env
        )
    running = EngineProcess(engine, root, port, process, log_path)
    try:
        running.wait_healthy(timeout)
    except BaseException:
        running.stop()
        raise
    return running


@contextmanager
def running_engine(
    engine: Engine, root: Path, email: str, password: str, *, timeout: float = 30
) -> Iterator[EngineProcess]:
    running = start_engine(engine, root, email, password, timeout=timeout)
    try:
        yield running
    finally:
        running.stop()
