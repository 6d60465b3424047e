"""Activity reported by engines themselves: a real datagram socket, real sender processes.

A report counts for the instance whose folder the sending process works in, and only then;
malformed reports are dropped. End to end, a `pocketfleet` instance that serves a request
which never passed through the proxy still gets its last request recorded.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from control_plane.activity_reports import ActivityReceiver
from proxy.activity import ActivityTracker
from tests.support.server import BIN, ServeProcess, running_server, scratch_dir, sign_up

# A sender stays alive a moment after sending: the receiver looks at the living process.
SEND = """
import json, socket, sys, time
report = sys.argv[2] if len(sys.argv) > 2 else json.dumps(
    {"last_request_at": 1234.5, "requests": 3, "in_flight": 0, "streams": 2})
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
    sock.sendto(report.encode(), sys.argv[1])
print("sent", flush=True)
time.sleep(5)
"""
_senders: list[subprocess.Popen[str]] = []


@pytest.fixture
def fleet() -> Iterator[Path]:
    root = scratch_dir()
    (root / "instances" / "inst1").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    yield root
    for sender in _senders:
        sender.kill()
        sender.wait()
    _senders.clear()


async def hosts(instance_id: str) -> str | None:
    return {"inst1": "one.localhost"}.get(instance_id)


def send(socket_path: Path, cwd: Path, report: str | None = None) -> None:
    argv = [sys.executable, "-c", SEND, str(socket_path), *([report] if report else [])]
    sender = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, text=True)
    _senders.append(sender)
    assert sender.stdout is not None and sender.stdout.readline() == "sent\n"


async def settle(check: Callable[[], bool], timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def test_a_report_counts_for_the_instance_the_sender_runs_in(fleet: Path) -> None:
    tracker = ActivityTracker()
    receiver = ActivityReceiver(fleet / "run" / "a.sock", fleet / "instances", hosts, tracker)
    receiver.open()
    try:
        send(receiver.path, fleet / "instances" / "inst1")
        assert await settle(lambda: "one.localhost" in tracker.snapshot())
        seen = tracker.snapshot()["one.localhost"]
        assert (seen.last_request_at, seen.open_streams) == (1234.5, 2)
        assert seen.requests == 0  # the proxy's own count is not doubled by reports
    finally:
        receiver.close()
    assert not receiver.path.exists()


async def test_reports_from_outside_an_instance_folder_or_malformed_are_dropped(
    fleet: Path,
) -> None:
    tracker = ActivityTracker()
    receiver = ActivityReceiver(fleet / "run" / "a.sock", fleet / "instances", hosts, tracker)
    receiver.open()
    try:
        send(receiver.path, fleet / "elsewhere")  # not an instance's folder
        send(receiver.path, fleet / "instances")  # the parent of them all
        for bad in ("not json", '{"streams": 1}', '{"last_request_at": "x", "streams": 1}'):
            send(receiver.path, fleet / "instances" / "inst1", bad)
        # a good report sent last: once it is in, everything before it was read and dropped
        send(receiver.path, fleet / "instances" / "inst1")
        assert await settle(lambda: "one.localhost" in tracker.snapshot())
        assert list(tracker.snapshot()) == ["one.localhost"]
        assert tracker.snapshot()["one.localhost"].last_request_at == 1234.5
    finally:
        receiver.close()


def test_an_open_stream_reported_by_the_engine_expires_unless_repeated() -> None:
    tracker = ActivityTracker()
    tracker.engine_reported("a.localhost", 10.0, 1)
    assert tracker.snapshot()["a.localhost"].open_streams == 1
    tracker._engine["a.localhost"].received_at -= 31  # as if last heard from 31 s ago
    assert tracker.snapshot()["a.localhost"].open_streams == 0
    assert tracker.snapshot()["a.localhost"].last_request_at == 10.0
    tracker.forget("a.localhost")
    assert "a.localhost" not in tracker.snapshot()


@pytest.fixture(scope="module")
def serve() -> Iterator[ServeProcess]:
    # instances as our own user: this interpreter may live in a folder instance users cannot
    # read (see tests/control_plane/engines/test_pocketfleet.py)
    env = {"PF_INSTANCE_USERS": "false", "PF_SAMPLE_INTERVAL_S": "0.3"}
    with running_server(env=env) as server:
        yield server


def test_a_pocketfleet_instance_reports_requests_the_proxy_never_saw(serve: ServeProcess) -> None:
    api = serve.client()
    api.headers["Authorization"] = f"Bearer {sign_up(api, 'op@example.com')}"
    subprocess.run(
        [str(BIN / "pocketfleet"), "operator", "add", "op@example.com"],
        env=serve.env(), check=True, capture_output=True,
    )  # fmt: skip
    created = api.post("/api/instances", json={"name": "quiet", "engine": "pocketfleet"})
    assert created.status_code == 201, created.text
    assert api.post("/api/instances/quiet/start").json()["status"] == "running"
    row = next(r for r in api.get("/api/fleet").json() if r["name"] == "quiet")
    time.sleep(1)
    before = datetime.now().astimezone()
    direct = httpx.get(f"http://127.0.0.1:{row['port']}/api/health")  # not through the proxy
    assert direct.status_code == 200

    deadline = time.monotonic() + 20
    while True:
        last = api.get("/api/instances/quiet").json()["last_request"]
        if last is not None and datetime.fromisoformat(last) >= before:
            break
        assert time.monotonic() < deadline, f"last request still {last}, sent at {before}"
        time.sleep(0.1)
