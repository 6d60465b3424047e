"""The request pipeline as the app's whole middleware stack (`apis.middlewares`, steps 0, 5, 6):
the restart gate, and the answers starlette's two exception layers gave, over real ASGI calls
of a real `App`; and `routing.lean_endpoint` answering as starlette's `request_response`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instance_runtime.apis.base import JSONResponse, error_response
from instance_runtime.apis.middlewares import RequestPipeline
from instance_runtime.apis.routing import IndexedRouter, lean_endpoint
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.restart_gate import RestartGate


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(ApiError(exc.status_code, f"Http {exc.status_code}."))


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(ApiError(500, "Something went wrong while processing your request."))


HANDLERS = {ApiError: _api_error, HTTPException: _http_error}


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": request.path_params.get("id", "")})


async def refused(request: Request) -> Response:
    raise ApiError(400, "Refused.", {"field": {"code": "x", "message": "Bad."}})


async def broken(request: Request) -> Response:
    raise KeyError("broken")


async def streamed(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    return StreamingResponse(parts(), media_type="text/plain")


async def stream_refused_first(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        raise ApiError(409, "Not now.")
        yield b""  # pragma: no cover

    return StreamingResponse(parts(), media_type="text/plain")


def _router(**routes: Any) -> IndexedRouter:
    return IndexedRouter(
        [
            Route("/ok/{id}", ok, methods=["GET"]),
            Route("/refused", refused, methods=["GET"]),
            Route("/broken", broken, methods=["GET"]),
            Route("/streamed", streamed, methods=["GET"]),
            Route("/stream-refused", stream_refused_first, methods=["GET"]),
        ]
    )


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[App]:
    app = App(tmp_path / "pb_data")
    try:
        yield app
    finally:
        app.close()


def _scope(path: str, method: str = "GET") -> Scope:
    return {
        "type": "http", "method": method, "path": path, "raw_path": path.encode(),
        "query_string": b"", "headers": [(b"origin", b"http://x.test")],
        "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 8090), "scheme": "http",
        "http_version": "1.1", "app": None,
    }  # fmt: skip


def _call(
    app: ASGIApp, path: str, method: str = "GET"
) -> tuple[list[Message], BaseException | None]:
    sent: list[Message] = []
    asked: list[int] = []

    async def send(message: Message) -> None:
        sent.append(message)

    async def receive() -> Message:
        asked.append(1)
        if len(asked) > 1:  # the client stays: a stream's disconnect watch waits
            await asyncio.Event().wait()
        return {"type": "http.request", "body": b"", "more_body": False}

    async def run() -> BaseException | None:
        try:
            await app(_scope(path, method), receive, send)
        except Exception as exc:
            return exc
        return None

    return sent, asyncio.run(run())


def _answer(sent: list[Message]) -> tuple[int, dict[bytes, bytes], bytes]:
    start = sent[0]
    assert start["type"] == "http.response.start"
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return int(start["status"]), dict(start["headers"]), body


def _pipeline(runtime: App, gate: RestartGate | None = None) -> RequestPipeline:
    return RequestPipeline(
        _router(),
        runtime,
        gate=gate or RestartGate(),
        exception_handlers=HANDLERS,
        server_error=_server_error,
    )


def test_an_answer_gets_the_pipeline_headers_and_is_logged(runtime: App) -> None:
    sent, raised = _call(_pipeline(runtime), "/ok/abc")
    assert raised is None
    status, headers, body = _answer(sent)
    assert (status, orjson.loads(body)) == (200, {"ok": "abc"})
    assert headers[b"x-frame-options"] == b"SAMEORIGIN"
    assert headers[b"access-control-allow-origin"] == b"*"
    assert headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(body)).encode()
    runtime.request_log.flush()
    assert [e["message"] for e in runtime.request_log.recent(5)] == ["GET /ok/abc"]


def test_an_api_error_is_answered_by_its_handler_through_the_pipeline(runtime: App) -> None:
    sent, raised = _call(_pipeline(runtime), "/refused")
    assert raised is None
    status, headers, body = _answer(sent)
    assert status == 400
    assert orjson.loads(body)["message"] == "Refused."
    assert headers[b"x-content-type-options"] == b"nosniff"
    runtime.request_log.flush()
    (entry,) = runtime.request_log.recent(5)
    assert entry["data"]["error"] == "Refused."
    assert entry["data"]["details"] == {"field": "bad"}


@pytest.mark.parametrize(
    ("path", "method", "status"), [("/nowhere", "GET", 404), ("/refused", "POST", 405)]
)
def test_a_router_refusal_goes_to_the_http_exception_handler(
    runtime: App, path: str, method: str, status: int
) -> None:
    sent, raised = _call(_pipeline(runtime), path, method)
    assert raised is None
    got, headers, body = _answer(sent)
    assert (got, orjson.loads(body)["message"]) == (status, f"Http {status}.")
    assert headers[b"x-frame-options"] == b"SAMEORIGIN"


def test_an_unexpected_error_is_a_500_logged_answered_and_raised_again(runtime: App) -> None:
    sent, raised = _call(_pipeline(runtime), "/broken")
    assert isinstance(raised, KeyError)  # for the server to log, as starlette's layer
    status, headers, body = _answer(sent)
    assert status == 500
    assert orjson.loads(body)["message"].startswith("Something went wrong")
    assert b"x-frame-options" not in headers  # sent past the pipeline, as before
    runtime.request_log.flush()
    (entry,) = runtime.request_log.recent(5)
    assert entry["level"] == 8 and entry["data"]["status"] == 500


def test_a_handled_error_after_the_answer_started_is_not_answered_twice(runtime: App) -> None:
    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise ApiError(400, "Too late.")

    pipeline = RequestPipeline(
        half, runtime, exception_handlers=HANDLERS, server_error=_server_error
    )
    sent, raised = _call(pipeline, "/half")
    assert isinstance(raised, RuntimeError)
    assert "already started" in str(raised)
    assert [m["type"] for m in sent] == ["http.response.start"]


def test_requests_wait_at_a_closed_gate_and_a_restore_waits_for_them(runtime: App) -> None:
    gate = RestartGate()
    pipeline = _pipeline(runtime, gate)
    order: list[str] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def request(name: str) -> None:
        async def send(message: Message) -> None:
            if message["type"] == "http.response.start":
                order.append(name)

        await pipeline(_scope("/ok/1"), receive, send)

    async def run() -> None:
        async with gate.closed(5):
            waiting = asyncio.ensure_future(request("after restore"))
            await asyncio.sleep(0.05)
            order.append("restored")
        await waiting
        assert gate.running == 0

    asyncio.run(run())
    assert order == ["restored", "after restore"]


def _both(endpoint: Any, path: str) -> list[tuple[list[Message], str | None]]:
    """The messages and the exception type of `endpoint` under starlette's wrapper and ours."""
    out = []
    for app in (request_response(endpoint), lean_endpoint(endpoint)):

        async def with_handlers(scope: Scope, receive: Receive, send: Send, app: Any = app) -> None:
            scope["starlette.exception_handlers"] = (HANDLERS, {})
            await app(scope, receive, send)

        sent, raised = _call(with_handlers, path)
        out.append((sent, type(raised).__name__ if raised else None))
    return out


@pytest.mark.parametrize(
    "endpoint", [ok, refused, broken, streamed, stream_refused_first], ids=lambda f: f.__name__
)
def test_lean_endpoint_answers_as_starlettes_request_response(endpoint: Any) -> None:
    starlette_way, ours = _both(endpoint, "/x")
    assert ours == starlette_way


def test_the_router_serves_plain_async_routes_through_lean_endpoint() -> None:
    router = _router()
    kinds = {route.path: route.app.__qualname__ for route in router.routes}  # type: ignore[attr-defined]
    assert set(kinds.values()) == {"lean_endpoint.<locals>.app"}

    def sync_endpoint(request: Request) -> Response:
        return Response("sync")

    kept = IndexedRouter([Route("/sync", sync_endpoint)])
    assert kept.routes[0].app.__qualname__ == "request_response.<locals>.app"  # type: ignore[attr-defined]
    sent, raised = _call(kept, "/sync")
    assert raised is None and _answer(sent)[2] == b"sync"


@pytest.mark.parametrize("status", [200, 201, 204, 304, 404])
def test_json_response_headers_are_starlettes(status: int) -> None:
    class Reference(Response):
        media_type = "application/json"

        def render(self, content: Any) -> bytes:
            return orjson.dumps(content)

    ours, theirs = JSONResponse({"a": [1]}, status), Reference({"a": [1]}, status)
    assert (ours.body, ours.raw_headers) == (theirs.body, theirs.raw_headers)
    with_header = JSONResponse({"a": 1}, 200, headers={"X-A": "b"})
    assert with_header.raw_headers == Reference({"a": 1}, 200, headers={"X-A": "b"}).raw_headers
