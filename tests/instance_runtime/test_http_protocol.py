"""uvicorn with the coalescing protocol (`instance_runtime.http_protocol`), over loopback: every
byte of every response arrives, in order, whatever its size and however it is streamed."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from instance_runtime.http_protocol import FLUSH_AT, HttpProtocol

BIG = bytes(range(256)) * ((3 * FLUSH_AT) // 256 + 7)


async def _app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path = scope["path"]
    if path == "/stream":  # chunks sent in one step of the loop and across steps
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(20):
            await send({"type": "http.response.body", "body": b"%d," % i, "more_body": True})
            if i % 5 == 0:
                await asyncio.sleep(0.001)
        await send({"type": "http.response.body", "body": BIG, "more_body": True})
        await send({"type": "http.response.body", "body": b"end"})
        return
    body = BIG if path == "/big" else b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(_app, host="127.0.0.1", port=port, http=HttpProtocol, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_small_and_large_answers_arrive_whole_on_one_connection(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:  # keep-alive: one connection for all
        for _ in range(3):
            small = client.get("/small")
            assert small.status_code == 200 and small.json() == {"ok": True}
            assert small.headers["content-length"] == str(len(small.content))
            big = client.get("/big")
            assert big.content == BIG
        head = client.head("/small")
        assert head.status_code == 200 and head.content == b""


def test_a_streamed_answer_arrives_in_order(base_url: str) -> None:
    with httpx.Client(base_url=base_url) as client:
        answer = client.get("/stream")
    expected = b"".join(b"%d," % i for i in range(20)) + BIG + b"end"
    assert answer.status_code == 200 and answer.content == expected


def test_many_connections_at_once(base_url: str) -> None:
    async def run() -> list[bytes]:
        async with httpx.AsyncClient(base_url=base_url) as client:
            answers = await asyncio.gather(*(client.get(p) for p in ["/small", "/big"] * 20))
        return [a.content for a in answers]

    contents = asyncio.run(run())
    assert contents == [b'{"ok":true}', BIG] * 20
