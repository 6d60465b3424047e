"""Host names, and the dispatch of requests between the apex app and the instance proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from proxy.hostrouting import HostDispatcher, instance_name_for_host, normalize_host

if TYPE_CHECKING:
    from tests.proxy.conftest import ServeFn


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("App1.Localhost:8090", "app1.localhost"),
        ("app1.localhost.", "app1.localhost"),
        ("127.0.0.1:8090", "127.0.0.1"),
        ("[::1]:8090", "[::1]"),
        ("[::1]", "[::1]"),
        ("", ""),
    ],
)
def test_normalize_host(value: str, host: str) -> None:
    assert normalize_host(value) == host


@pytest.mark.parametrize(
    ("host", "domain", "name"),
    [
        ("myapp.localhost", "localhost", "myapp"),
        ("myapp.localhost:8090", "localhost", "myapp"),
        ("MyApp.LocalHost:80", "localhost", "myapp"),
        ("my-app-2.localhost", "localhost", "my-app-2"),
        ("app.example.com", "Example.com", "app"),
        ("app.example.com.", "example.com", "app"),
        ("localhost:8090", "localhost", None),
        ("localhost", "localhost", None),
        (".localhost", "localhost", None),
        ("a.b.localhost", "localhost", None),
        ("127.0.0.1:8090", "localhost", None),
        ("[::1]:8090", "localhost", None),
        ("myapp.otherhost", "localhost", None),
        ("myapplocalhost", "localhost", None),
        ("my_app.localhost", "localhost", None),
        ("-app.localhost", "localhost", None),
        ("app-.localhost", "localhost", None),
        ("a" * 64 + ".localhost", "localhost", None),
        ("a" * 63 + ".localhost", "localhost", "a" * 63),
        ("", "localhost", None),
    ],
)
def test_instance_name_for_host(host: str, domain: str, name: str | None) -> None:
    assert instance_name_for_host(host, domain) == name


@pytest.fixture
def dispatcher(serve_asgi: ServeFn) -> tuple[str, list[str]]:
    """A dispatcher under uvicorn for domain `LocalHost`; returns its URL and the lifespan
    events its two apps saw."""
    lifespan_events: list[str] = []

    async def who(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{request.app.state.name} {request.headers['host']}")

    def app(name: str) -> Starlette:
        @asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            lifespan_events.append(f"{name} startup")
            yield

        starlette = Starlette(routes=[Route("/{path:path}", who)], lifespan=lifespan)
        starlette.state.name = name
        return starlette

    port = serve_asgi(HostDispatcher(app("apex"), app("instances"), "LocalHost"), lifespan="on")
    return f"http://127.0.0.1:{port}", lifespan_events


@pytest.mark.parametrize(
    ("host", "target"),
    [
        ("myapp.localhost", "instances"),
        ("myapp.localhost:8090", "instances"),
        ("MYAPP.LOCALHOST:8090", "instances"),
        ("localhost", "apex"),
        ("localhost:8090", "apex"),
        ("127.0.0.1:8090", "apex"),
        ("a.b.localhost:8090", "apex"),
        ("myapp.example.com", "apex"),
    ],
)
async def test_dispatches_by_host(
    dispatcher: tuple[str, list[str]], host: str, target: str
) -> None:
    url, _ = dispatcher
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{url}/api/x", headers={"Host": host})
    assert response.text == f"{target} {host}"


async def test_lifespan_goes_to_the_apex_only(dispatcher: tuple[str, list[str]]) -> None:
    _, lifespan_events = dispatcher
    assert lifespan_events == ["apex startup"]


@pytest.mark.parametrize(
    ("scope_type", "headers", "target"),
    [
        ("http", [], "apex"),
        ("websocket", [(b"host", b"myapp.localhost:8090")], "instances"),
        ("websocket", [(b"host", b"localhost:8090")], "apex"),
    ],
)
async def test_dispatches_scopes_without_host_and_websockets(
    scope_type: str, headers: list[tuple[bytes, bytes]], target: str
) -> None:
    called: list[str] = []

    def app(name: str) -> ASGIApp:
        async def record(scope: Scope, receive: Receive, send: Send) -> None:
            called.append(name)

        return record

    dispatcher = HostDispatcher(app("apex"), app("instances"), "localhost")

    async def receive() -> Message:
        raise AssertionError("not read")

    async def send(message: Message) -> None:
        raise AssertionError("not sent")

    await dispatcher({"type": scope_type, "headers": headers}, receive, send)
    assert called == [target]
