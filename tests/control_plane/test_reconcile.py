"""The reconcile loop with real processes: crashed instances come back, repeated crashes end
in `failed` with the reason, and figures (memory, last request) are sampled."""

from __future__ import annotations

import contextlib
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
    database = serve.data_dir / "instances" / row["id"] / "pb_data" / "data.db"
    saved = database.read_bytes()
    # its database becomes something PocketBase cannot open, so every restart fails
    os.kill(row["pid"], signal.SIGKILL)
    eventually(lambda: fleet_row(operator, "doomed")["pid"] != row["pid"])
    operator.post("/api/instances/doomed/stop")
    eventually(lambda: fleet_row(operator, "doomed")["status"] == "stopped")
    for leftover in database.parent.glob("data.db-*"):
        leftover.unlink()
    database.write_bytes(b"this is not a database" * 100)
    operator.post("/api/instances/doomed/start")
    eventually(lambda: fleet_row(operator, "doomed")["status"] == "failed", timeout=60)
    failed = fleet_row(operator, "doomed")
    assert "failed 3 times" in failed["status_reason"]
    with serve.instance_client("doomed") as instance:
        assert instance.get("/api/health").status_code == 503
    # a start by the owner tries again, and works once the database is sound again
    database.write_bytes(saved)
    assert operator.post("/api/instances/doomed/start").json()["status"] == "running"


def test_a_squatted_port_moves_the_instance_to_another(
    serve: ServeProcess, operator: httpx.Client
) -> None:
    operator.post("/api/instances", json={"name": "squatted"})
    assert operator.post("/api/instances/squatted/start").json()["status"] == "running"
    row = fleet_row(operator, "squatted")
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(row["pid"], signal.SIGKILL)
        eventually(lambda: _bind(squatter, row["port"]))
        squatter.listen()
        squatter.settimeout(0)
        # restarted elsewhere: never failed, never routed to the squatter
        eventually(
            lambda: (
                (now := fleet_row(operator, "squatted"))["status"] == "running"
                and now["port"] != row["port"]
            ),
            timeout=60,
        )
        with serve.instance_client("squatted") as instance:
            assert instance.get("/api/health").status_code == 200
        with contextlib.suppress(BlockingIOError):
            accepted, _ = squatter.accept()
            accepted.close()
            # only the driver's own check may have connected: never a proxied request


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
