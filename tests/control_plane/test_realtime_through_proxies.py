"""Realtime of a `pocketfleet`-engine instance through each proxy pocketfleet runs, with real
processes: `pocketfleet serve` with its embedded proxy, and with a supervised Caddy in front
(`PF_PROXY=caddy`). Through either, the event stream reaches the client unbuffered (PB_CONNECT
is the first thing received and arrives before the server sends anything else; a record event
arrives within a second of its write), and an open stream counts as activity: an instance
whose idle limit passes with a stream open stays awake, and hibernates once it closes."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.support.ports import free_port
from tests.support.server import ServeProcess, running_server, sign_up

EMAIL = "realtime-owner@example.com"
SUPERUSER_PASSWORD = "superuser-pass-1"
NAME = "live"


@dataclass
class Front:
    """One way in to the instance: `port` on loopback, requests with `Host: host`."""

    kind: str
    serve: ServeProcess
    api: httpx.Client  # the control plane, as the instance's owner
    port: int
    host: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Host": self.host},
            timeout=30,
            trust_env=False,
        )

    def status(self) -> str:
        status: str = self.api.get(f"/api/instances/{NAME}").json()["status"]
        return status


def eventually(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def _environment(kind: str) -> tuple[dict[str, str], int | None]:
    # instances as our own user: this interpreter may live where instance uids cannot reach it
    env = {"PF_INSTANCE_USERS": "false", "PF_IDLE_SWEEP_INTERVAL_S": "0.3"}
    if kind == "embedded":
        return env, None
    http_port = free_port()
    env.update(
        PF_PROXY="caddy",
        PF_START_CADDY="true",
        PF_CADDY_HTTP=f"127.0.0.1:{http_port}",
        PF_CADDY_HTTPS=f"127.0.0.1:{free_port()}",
        PF_CADDY_CHECK_INTERVAL_S="0.2",
        PF_CADDY_ACTIVITY_POLL_S="0.2",
        PF_SAMPLE_INTERVAL_S="0.3",
    )
    return env, http_port


@pytest.fixture(scope="module", params=["embedded", "caddy"])
def front(request: pytest.FixtureRequest) -> Iterator[Front]:
    kind: str = request.param
    env, caddy_port = _environment(kind)
    with running_server(env=env) as serve:
        api = serve.client()
        api.headers["Authorization"] = f"Bearer {sign_up(api, EMAIL)}"
        body = {"name": NAME, "engine": "pocketfleet", "superuser_password": SUPERUSER_PASSWORD}
        created = api.post("/api/instances", json=body)
        assert created.status_code == 201, created.text
        eventually(lambda: api.get(f"/api/instances/{NAME}").json()["status"] == "running", 90)
        if caddy_port is None:
            found = Front(kind, serve, api, serve.port, f"{NAME}.localhost:{serve.port}")
        else:
            found = Front(kind, serve, api, caddy_port, f"{NAME}.localhost")

        def served() -> bool:
            with found.client() as client:
                return client.get("/api/health").status_code == 200

        eventually(served)
        try:
            yield found
        finally:
            api.close()


class RawStream:
    """`GET /api/realtime` on a socket: every byte as it came, with the time it came."""

    def __init__(self, front: Front) -> None:
        self.sock = socket.create_connection(("127.0.0.1", front.port), timeout=10)
        request = (
            f"GET /api/realtime HTTP/1.1\r\nHost: {front.host}\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        self.data = b""

    def wait_for(self, needle: bytes, timeout: float = 10.0) -> float:
        """The moment `needle` had arrived (fails when it does not within `timeout`)."""
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{needle!r} not received; got {self.data!r}"
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            assert chunk, f"stream closed before {needle!r}; got {self.data!r}"
            self.data += chunk
        return time.monotonic()

    def body(self) -> bytes:
        return self.data.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in self.data else b""

    def close(self) -> None:
        self.sock.close()


@contextmanager
def _superuser(front: Front) -> Iterator[httpx.Client]:
    with front.client() as client:
        auth = client.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": SUPERUSER_PASSWORD},
        )
        assert auth.status_code == 200, auth.text
        client.headers["Authorization"] = auth.json()["token"]
        yield client


def test_events_reach_the_client_unbuffered(front: Front) -> None:
    with _superuser(front) as su:
        made = su.post(
            "/api/collections",
            json={"name": f"pings_{front.kind}", "type": "base", "listRule": "",
                  "fields": [{"name": "n", "type": "number"}]},
        )  # fmt: skip
        assert made.status_code == 200, made.text
        stream = RawStream(front)
        try:
            stream.wait_for(b"}\n\n")
            head = stream.data.split(b"\r\n\r\n", 1)[0].lower()
            assert b"content-type: text/event-stream" in head
            # PB_CONNECT is the first thing received, whole, while the server sends nothing
            # more until there is something to say
            size, _, rest = stream.body().partition(b"\r\n")  # chunked: the first chunk
            first = rest[: int(size, 16)]
            found = re.fullmatch(
                rb'id:(\w{40})\nevent:PB_CONNECT\ndata:\{"clientId":"\1"\}\n\n', first
            )
            assert found is not None, stream.data
            client_id = found.group(1).decode()
            answer = su.post(
                "/api/realtime",
                json={"clientId": client_id, "subscriptions": [f"pings_{front.kind}/*"]},
            )
            assert answer.status_code == 204, answer.text
            delays: list[float] = []
            for n in range(1, 6):
                written = time.monotonic()
                created = su.post(f"/api/collections/pings_{front.kind}/records", json={"n": n})
                assert created.status_code == 200, created.text
                delays.append(stream.wait_for(f'"n":{n}'.encode(), timeout=5) - written)
            assert max(delays) < 1.0, delays
        finally:
            stream.close()


def test_an_open_stream_keeps_the_instance_awake(front: Front) -> None:
    assert front.status() == "running"
    stream = RawStream(front)
    try:
        stream.wait_for(b"event:PB_CONNECT")
        patched = front.api.patch(f"/api/instances/{NAME}", json={"idle_timeout_s": 1})
        assert patched.status_code == 200, patched.text
        time.sleep(3)  # the limit and about ten sweeps pass with the stream open
        assert front.status() == "running"
    finally:
        stream.close()
    eventually(lambda: front.status() == "hibernated")
    reset: dict[str, Any] = {"idle_timeout_s": 0}
    assert front.api.patch(f"/api/instances/{NAME}", json=reset).status_code == 200
