"""/api/realtime on a real uvicorn server over loopback (in this process, so that the stream's
timeouts can be made short): PB_CONNECT, keep-alives, idle timeout, maximum age, clients gone
away, the `@oauth2` redirect, a client's auth following its record, and an update judged before
its write answers."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from instance_runtime.apis import realtime as realtime_module
from instance_runtime.apis.realtime import Timeouts, realtime_of
from instance_runtime.core.app import App
from instance_runtime.server import create_app
from tests.support.ports import free_port
from tests.support.server import scratch_dir

EMAIL = "admin@example.com"
PASSWORD = "admin-pass-1234"
END = b"\r\n0\r\n\r\n"  # the last chunk of a chunked response


@dataclass
class Server:
    url: str
    port: int
    timeouts: Timeouts
    runtime: App

    def client(self, token: str = "") -> httpx.Client:
        headers = {"Authorization": token} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def superuser(self) -> httpx.Client:
        answer = httpx.post(
            f"{self.url}/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        )
        assert answer.status_code == 200, answer.text
        return self.client(answer.json()["token"])


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    root = scratch_dir("pf-realtime-")
    data_dir = root / "pb_data"
    subprocess.run(
        [sys.executable, "-m", "instance_runtime", "superuser", "upsert", EMAIL, PASSWORD,
         "--dir", str(data_dir)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    app = create_app(Path(data_dir))
    timeouts = realtime_of(app.state.runtime).timeouts
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not uv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield Server(f"http://127.0.0.1:{port}", port, timeouts, app.state.runtime)
    finally:
        uv.should_exit = True
        thread.join(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(autouse=True)
def default_timeouts(server: Server) -> Iterator[None]:
    yield
    server.timeouts.idle_timeout_s, server.timeouts.max_age_s = 300.0, 1800.0
    server.timeouts.keepalive_s = 30.0


class Stream:
    """A raw `GET /api/realtime` on a socket: what the server wrote, as it wrote it."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            b"GET /api/realtime HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
        )
        self.data = b""
        self.wait_for(b"event:PB_CONNECT")
        found = re.search(rb'data:\{"clientId":"(\w+)"\}', self.wait_for(b"}\n\n"))
        assert found is not None
        self.client_id = found.group(1).decode()

    def wait_for(self, needle: bytes, timeout: float = 5.0) -> bytes:
        deadline = time.monotonic() + timeout
        while needle not in self.data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{needle!r} not received; got {self.data!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                raise AssertionError(f"stream closed before {needle!r}; got {self.data!r}")
            self.data += chunk
        return self.data

    def close(self) -> None:
        self.sock.close()


def subscribe(server: Server, client_id: str, topics: list[str], token: str = "") -> httpx.Response:
    with server.client(token) as http:
        return http.post("/api/realtime", json={"clientId": client_id, "subscriptions": topics})


def test_connect_keepalives_and_idle_timeout(server: Server) -> None:
    server.timeouts.keepalive_s, server.timeouts.idle_timeout_s = 0.2, 1.0
    stream = Stream(server.port)
    try:
        head = stream.data.split(b"\r\n\r\n", 1)[0].lower()
        assert b"content-type: text/event-stream" in head and b"x-accel-buffering: no" in head
        connect = (
            f'id:{stream.client_id}\nevent:PB_CONNECT\ndata:{{"clientId":"{stream.client_id}"}}\n\n'
        )
        assert connect.encode() in stream.data and len(stream.client_id) == 40
        stream.wait_for(b":\n\n", timeout=2)  # a keep-alive comment
        assert subscribe(server, stream.client_id, ["x/*"]).status_code == 204
        started = time.monotonic()
        stream.wait_for(END, timeout=5)  # keep-alives do not count as activity
        assert time.monotonic() - started < 3
        assert subscribe(server, stream.client_id, []).status_code == 404
    finally:
        stream.close()


def test_maximum_age(server: Server) -> None:
    server.timeouts.keepalive_s, server.timeouts.max_age_s = 0.1, 0.8
    stream = Stream(server.port)
    try:
        stream.wait_for(END, timeout=5)
        assert subscribe(server, stream.client_id, []).status_code == 404
    finally:
        stream.close()


def test_a_client_gone_away_is_unregistered(server: Server) -> None:
    stream = Stream(server.port)
    assert subscribe(server, stream.client_id, ["x/*"]).status_code == 204
    stream.close()
    deadline = time.monotonic() + 5
    while subscribe(server, stream.client_id, []).status_code != 404:
        assert time.monotonic() < deadline, "the client stayed registered"
        time.sleep(0.05)


def test_oauth2_redirect_reaches_its_client_once(server: Server) -> None:
    stream = Stream(server.port)
    try:
        assert subscribe(server, stream.client_id, ["@oauth2"]).status_code == 204
        with server.client() as http:
            first = http.get(
                "/api/oauth2-redirect", params={"state": stream.client_id, "code": "abc"}
            )
            assert first.status_code == 307 and "success" in first.headers["location"]
            data = f'event:@oauth2\ndata:{{"state":"{stream.client_id}","code":"abc"}}\n\n'
            stream.wait_for(data.encode())
            again = http.get(
                "/api/oauth2-redirect", params={"state": stream.client_id, "code": "abc"}
            )
            assert again.status_code == 307 and "failure" in again.headers["location"]
    finally:
        stream.close()


def test_the_client_auth_follows_its_record(server: Server) -> None:
    with server.superuser() as su:
        made = su.post("/api/collections", json={"name": "rt_members", "type": "auth"})
        assert made.status_code == 200, made.text
        member = {
            "email": "m@example.com",
            "password": "member-pass-1",
            "passwordConfirm": "member-pass-1",
        }
        created = su.post("/api/collections/rt_members/records", json=member)
        assert created.status_code == 200, created.text
        login = httpx.post(
            f"{server.url}/api/collections/rt_members/auth-with-password",
            json={"identity": "m@example.com", "password": "member-pass-1"},
        )
        token = login.json()["token"]
        stream = Stream(server.port)
        try:
            assert subscribe(server, stream.client_id, ["rt_members/*"], token).status_code == 204
            refused = subscribe(server, stream.client_id, ["rt_members/*"])
            assert refused.status_code == 403
            assert refused.json()["message"] == (
                "The current and the previous request authorization don't match."
            )
            # a new password changes the tokenKey: the client's auth is cleared
            changed = su.patch(
                f"/api/collections/rt_members/records/{created.json()['id']}",
                json={"password": "member-pass-2", "passwordConfirm": "member-pass-2"},
            )
            assert changed.status_code == 200, changed.text
            assert subscribe(server, stream.client_id, ["rt_members/*"]).status_code == 204
        finally:
            stream.close()


def test_an_update_is_judged_before_its_write_answers(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record as the update left it decides who hears of it, even when the client's next
    update (sent once the first answered) hides it: the judging is slowed down here, so an
    event judged after its write had answered would be judged on the hidden record."""
    with server.superuser() as su:
        rule = 'status = "public"'
        made = su.post(
            "/api/collections",
            json={
                "name": "rt_posts",
                "fields": [{"name": "status", "type": "text"}, {"name": "title", "type": "text"}],
                "listRule": rule,
                "viewRule": rule,
            },
        )
        assert made.status_code == 200, made.text
        post = su.post("/api/collections/rt_posts/records", json={"status": "public"}).json()
        stream = Stream(server.port)
        try:
            assert subscribe(server, stream.client_id, ["rt_posts/*"]).status_code == 204
            judge = realtime_module.accessible

            def slow_judge(*args: Any) -> Any:
                time.sleep(0.3)  # on a reader thread, before the judging reads
                return judge(*args)

            monkeypatch.setattr(realtime_module, "accessible", slow_judge)
            url = f"/api/collections/rt_posts/records/{post['id']}"
            assert su.patch(url, json={"title": "seen"}).status_code == 200
            assert su.patch(url, json={"status": "hidden"}).status_code == 200
            stream.wait_for(b'"title":"seen"', timeout=5)
            assert b'"status":"hidden"' not in stream.data
        finally:
            stream.close()
