"""The runtime's activity reports, read from a real datagram socket: requests and event
streams are counted, reports are throttled, and a missing receiver never fails a request."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from instance_runtime.activity import ActivityMiddleware, ActivityReporter
from tests.support.server import scratch_dir


@pytest.fixture
def receiver() -> Iterator[tuple[socket.socket, str]]:
    path = str(scratch_dir() / "activity.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    yield sock, path
    sock.close()


def reports(sock: socket.socket) -> list[dict[str, Any]]:
    """Every report waiting now."""
    found = []
    sock.setblocking(False)
    try:
        while True:
            found.append(json.loads(sock.recv(4096)))
    except BlockingIOError:
        return found
    finally:
        sock.settimeout(5)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Plain JSON at `/`, an event stream at `/stream` (open for 0.8 s)."""
    kind = b"text/event-stream" if scope["path"] == "/stream" else b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", kind)]})
    await asyncio.sleep(0.8 if scope["path"] == "/stream" else 0)
    await send({"type": "http.response.body", "body": b"{}"})


async def call(asgi: Any, path: str) -> None:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        return None

    await asgi({"type": "http", "path": path, "headers": []}, receive, send)


async def test_requests_and_streams_are_reported_at_most_once_per_interval(
    receiver: tuple[socket.socket, str],
) -> None:
    sock, path = receiver
    reporter = ActivityReporter(path, interval_s=0.3, heartbeat_s=0.1)
    asgi = ActivityMiddleware(app, reporter)
    await call(asgi, "/")
    first = json.loads(sock.recv(4096))  # the first change after quiet goes at once
    assert first["requests"] == 1 and first["in_flight"] == 1 and first["last_request_at"] > 0

    await asyncio.gather(*(call(asgi, "/") for _ in range(20)))
    assert reports(sock) == []  # within the interval: held back
    await asyncio.sleep(0.4)
    batched = reports(sock)
    assert len(batched) == 1
    assert batched[0]["requests"] == 20 and batched[0]["in_flight"] == 0

    stream = asyncio.create_task(call(asgi, "/stream"))
    await asyncio.sleep(0.6)  # a throttled report, then heartbeats while it stays open
    while_open = [r["streams"] for r in reports(sock)]
    assert len(while_open) >= 2 and set(while_open) == {1}
    await stream
    await asyncio.sleep(0.4)
    assert [r["streams"] for r in reports(sock)][-1:] == [0]  # closed
    assert not reporter.streams
    reporter.close()


async def test_no_receiver_never_fails_a_request() -> None:
    reporter = ActivityReporter(str(Path(scratch_dir()) / "nobody.sock"), interval_s=0)
    asgi = ActivityMiddleware(app, reporter)
    for _ in range(3):
        await call(asgi, "/")
    assert reporter.in_flight == 0
    reporter.close()
