"""The reconcile loop with real processes: crashed instances come back, repeated crashes end
in `failed` with the reason, and figures (memory, last request) are sampled."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.server import BIN, ServeProcess, running_server, sign_up


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    env = {"PF_MAX_CRASH_RESTARTS": "2", "PF_SAMPLE_INTERVAL_S": "0.5"}
    with running_server(env=env) as server:
        yield server


@pytest.fixture(scope="module")
def operator(serve: ServeProcess) -> Iterator[httpx.Client]:
    api = serve.client()
    api.headers["Authorization"] = f"Bearer {sign_up(api, 'op@example.com')}"
    import subprocess

    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", "op@example.com"],
        env=serve.env(), check=True, capture_output=True,
    )  # fmt: skip
    yield api
    api.close()


def fleet_row(api: httpx.Client, name: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = api.get("/api/fleet").json()
    return next(row for row in rows if row["name"] == name)


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_a_crashed_instance_is_restarted(operator: httpx.Client) -> None:
    operator.post("/api/instances", json={"name": "crashy"})
    assert operator.post("/api/instances/crashy/start").json()["status"] == "running"
    pid = fleet_row(operator, "crashy")["pid"]
    os.kill(pid, signal.SIGKILL)
    eventually(
        lambda: (
            (row := fleet_row(operator, "crashy"))["status"] == "running"
            and row["pid"] not in (None, pid)
        )
    )


def test_repeated_crashes_end_in_failed_with_the_reason(
    serve: ServeProcess, operator: httpx.Client
) -> None:
    operator.post("/api/instances", json={"name": "doomed"})
    assert operator.post("/api/instances/doomed/start").json()["status"] == "running"
    row = fleet_row(operator, "doomed")
    # something else takes the instance's port, so every restart fails
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(row["pid"], signal.SIGKILL)
        eventually(lambda: _bind(squatter, row["port"]))
        squatter.listen()
        eventually(lambda: fleet_row(operator, "doomed")["status"] == "failed", timeout=60)
        failed = fleet_row(operator, "doomed")
        assert "failed 3 times" in failed["status_reason"]
        with serve.instance_client("doomed") as instance:
            assert instance.get("/api/health").status_code == 503
    # a start by the owner tries again, and works now that the port is free
    assert operator.post("/api/instances/doomed/start").json()["status"] == "running"


def test_memory_and_last_request_are_sampled(serve: ServeProcess, operator: httpx.Client) -> None:
    operator.post("/api/instances", json={"name": "busy"})
    assert operator.post("/api/instances/busy/start").json()["status"] == "running"
    with serve.instance_client("busy") as instance:
        assert instance.get("/api/health").status_code == 200
    eventually(
        lambda: (
            (row := fleet_row(operator, "busy"))["memory_bytes"] is not None
            and row["last_request"] is not None
        )
    )
    assert fleet_row(operator, "busy")["memory_bytes"] > 1_000_000


def _bind(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True
