"""The request log records a request before its client has the whole answer (as PocketBase),
so that a client's next request, sent once it has the answer, is always logged after it."""

from __future__ import annotations

import asyncio
from pathlib import Path

from starlette.types import Message, Receive, Scope, Send

from instance_runtime.apis.middlewares import RequestPipeline
from instance_runtime.core.app import App


async def refusing_app(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 400, "headers": []})
    await send({"type": "http.response.body", "body": b'{"message":"no"}', "more_body": True})
    await send({"type": "http.response.body", "body": b""})


def test_a_request_is_logged_before_the_last_part_of_its_answer_goes_out(tmp_path: Path) -> None:
    runtime = App(tmp_path / "pb_data")
    try:
        pipeline = RequestPipeline(refusing_app, runtime)
        seen_when_sent: list[list[str]] = []

        async def send(message: Message) -> None:
            if message["type"] == "http.response.body":
                runtime.request_log.flush()
                seen_when_sent.append([e["message"] for e in runtime.request_log.recent(10)])

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope: Scope = {
            "type": "http", "method": "GET", "path": "/api/first", "raw_path": b"/api/first",
            "query_string": b"", "headers": [], "client": ("127.0.0.1", 5555),
            "server": ("127.0.0.1", 8090), "scheme": "http", "http_version": "1.1",
        }  # fmt: skip
        asyncio.run(pipeline(scope, receive, send))
        # not yet at the first part; there when the last part went out, and only once
        assert seen_when_sent == [[], ["GET /api/first"]]
    finally:
        runtime.close()
