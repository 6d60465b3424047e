"""The supervised Caddy child: loopback-only admin, restart after a crash, clean stop, and a
leftover Caddy of an earlier run stopped first."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.caddy.process import CaddyProcess, CaddyStartError
from tests.support.caddy import CADDY
from tests.support.ports import free_port
from tests.support.server import scratch_dir


def test_the_admin_endpoint_must_be_loopback(tmp_path: Path) -> None:
    with pytest.raises(CaddyStartError, match="loopback"):
        CaddyProcess(CADDY, "0.0.0.0:2019", tmp_path)


async def test_a_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    process = CaddyProcess("/nonexistent/caddy", f"127.0.0.1:{free_port()}", tmp_path)
    with pytest.raises(CaddyStartError, match="cannot run"):
        await process.start()


def _answers(admin: str) -> bool:
    try:
        return httpx.get(f"http://{admin}/config/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def test_a_crashed_caddy_is_started_again() -> None:
    root = scratch_dir("pf-caddy-proc-")
    admin = f"127.0.0.1:{free_port()}"
    restored = asyncio.Event()

    async def on_restart() -> None:
        restored.set()

    process = CaddyProcess(CADDY, admin, root / "caddy", on_restart=on_restart)
    try:
        await process.start()
        first = process.pid
        assert first is not None and _answers(admin)
        assert (root / "caddy" / "caddy.pid").read_text() == str(first)

        os.kill(first, signal.SIGKILL)
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
    state.mkdir()
    config = root / "leftover.json"
    config.write_text(json.dumps({"admin": {"listen": f"127.0.0.1:{free_port()}"}}))
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
    admin = f"127.0.0.1:{free_port()}"
    process = CaddyProcess(CADDY, admin, state)
    try:
        await process.start()
        assert await asyncio.to_thread(old.wait, 5) is not None  # it was stopped
        assert process.pid != old.pid and await asyncio.to_thread(_answers, admin)
    finally:
        await process.stop()
