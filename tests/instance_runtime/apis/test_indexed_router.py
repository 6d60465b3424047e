"""`apis.routing.IndexedRouter` picks the route starlette's `Router` picks, for every path."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.types import Message

from instance_runtime.apis.routing import IndexedRouter
from instance_runtime.hooks.routes import RouteTable


def _endpoint(name: str) -> Any:
    async def endpoint(request: Request) -> Response:
        return PlainTextResponse(f"{name} {sorted(request.path_params.items())}")

    return endpoint


def _routes() -> list[BaseRoute]:
    inner = Router([Route("/x/{rest:path}", _endpoint("mounted"), methods=["GET"])])
    return [
        Route("/api/collections/{collection}/records", _endpoint("list"), methods=["GET"]),
        Route("/api/collections/{collection}/records", _endpoint("create"), methods=["POST"]),
        Route("/api/collections/{collection}/records/{id}", _endpoint("view"), methods=["GET"]),
        Route("/api/collections/{collection}/records/{id}", _endpoint("del"), methods=["DELETE"]),
        Route("/api/health", _endpoint("health"), methods=["GET", "HEAD"]),
        Route("/api/collections/meta/scaffolds", _endpoint("scaffolds"), methods=["GET"]),
        Route("/api/collections/{collection}", _endpoint("collection"), methods=["GET"]),
        Route("/api/collections/{collection}/auth-refresh", _endpoint("refresh"), methods=["POST"]),
        Route("/api/files/{collection}/{record}/{name}", _endpoint("file"), methods=["GET"]),
        Route("/api/{name}.json", _endpoint("dotted"), methods=["GET"]),
        Route("/api/trailing/", _endpoint("trailing"), methods=["GET"]),
        Route("/static/{rest:path}", _endpoint("static"), methods=["GET"]),
        Mount("/mounted", app=inner),
        RouteTable(),  # the hook routes: tried for every path
    ]


PATHS = [
    "/api/collections/items/records",
    "/api/collections/items/records/abc",
    "/api/collections/items/records/abc/",
    "/api/collections/items/records/",
    "/api/collections/meta/scaffolds",
    "/api/collections/items",
    "/api/collections/items/auth-refresh",
    "/api/collections/records",
    "/api/collections/items/records/a/b",
    "/api/health",
    "/api/health/",
    "/api/files/c/r/name.png",
    "/api/settings.json",
    "/api/trailing",
    "/api/trailing/",
    "/static/a/b/c/d/e/f/g/h/i",
    "/static/",
    "/mounted/x/1/2",
    "/",
    "",
    "/nothing/here/at/all/deeper/than/any/route/has",
    "/api//records",
]


async def _call(router: Router, method: str, path: str) -> tuple[int, bytes, str]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test")],
        "scheme": "http",
        "server": ("test", 80),
        "app": object(),  # inside an app: an unmatched path raises its HTTPException
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    try:
        await router(scope, receive, send)
    except HTTPException as exc:
        return exc.status_code, b"", ""
    status = int(sent[0]["status"])
    headers = dict(sent[0].get("headers", []))
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, body, headers.get(b"location", b"").decode()


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "HEAD", "PATCH"])
def test_same_route_as_starlette(method: str) -> None:
    plain, indexed = Router(_routes()), IndexedRouter(_routes())

    async def both() -> None:
        for path in PATHS:
            assert await _call(indexed, method, path) == await _call(plain, method, path), path

    asyncio.run(both())


def test_a_route_is_found_among_many() -> None:
    routes: list[BaseRoute] = [
        Route(f"/api/r{i}/{{id}}", _endpoint(f"r{i}"), methods=["GET"]) for i in range(50)
    ]
    routes.append(Route("/api/collections/{c}/auth-refresh", _endpoint("last"), methods=["POST"]))
    router = IndexedRouter(routes)

    async def call() -> tuple[int, bytes, str]:
        return await _call(router, "POST", "/api/collections/users/auth-refresh")

    assert asyncio.run(call()) == (200, b"last [('c', 'users')]", "")
    # only the one route that can match it was tried
    assert router._candidates("/api/collections/users/auth-refresh") == [routes[-1]]
