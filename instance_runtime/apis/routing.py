"""`IndexedRouter`: starlette's `Router`, trying only the routes that could match a path.

Contract: the same route is chosen as starlette's `Router` chooses (the first full match in the
routes' order, else the first partial one, else the router's own fallback: slash redirects,
404), but a request's path is matched only against the routes that can match it: a plain
`Route` whose path has no `:path` parameter matches exactly as many `/`-separated segments as
its path has, and, when its last segment is literal, only a path ending in that segment. Every
other route (a `Mount`, a `:path` parameter, the hook routes' `RouteTable`, any `BaseRoute`) is
tried for every path. Candidate lists are kept per (segment count, last segment) shape, in the
routes' order; a shape no route names literally shares one list. Anything but an HTTP request,
and a request no candidate matches, goes through starlette's own `Router.app` unchanged.
`routes` must not change after the first request (the app's own never do; hook routes change
inside their `RouteTable`).

Each plain `Route` over an async function endpoint (starlette's `request_response`) is served
by `lean_endpoint`, to the same effect: the endpoint's answer, or for an exception it raises
the handler starlette would pick (`starlette.exception_handlers` of the scope; none: the
exception goes on). A plain answer (`Response.__call__`, no background task) is sent straight
to `send`; any other (a stream, a file) through starlette's own exception wrapper, as before.

Why: starlette tries every route in turn (a regular expression and two dicts each); an auth
refresh, twenty routes down, spent a tenth of its time there.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from starlette._exception_handler import wrap_app_handling_exceptions
from starlette._utils import get_route_path, is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import ASGIApp, Receive, Scope, Send

from instance_runtime.apis.middlewares import handler_for

_ANY = None  # a last segment that no route names literally
Shape = tuple[int, str | None]


def _segments(route: BaseRoute) -> tuple[int, str | None] | None:
    """(segment count, literal last segment or `_ANY`) of a route matched per segment, None
    for a route that must be tried for every path."""
    if type(route) is not Route:
        return None
    if any(c.regex == ".*" for c in route.param_convertors.values()):  # `{name:path}`
        return None
    parts = route.path.split("/")
    last = parts[-1]
    return len(parts), (_ANY if "{" in last else last)


_NO_HANDLERS: tuple[dict[Any, Any], dict[int, Any]] = ({}, {})


def lean_endpoint(endpoint: Callable[[Request], Awaitable[Response]]) -> ASGIApp:
    """starlette's `request_response(endpoint)` for an async `endpoint` (see the module
    docstring)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request)
        except Exception as exc:
            handler = handler_for(scope.get("starlette.exception_handlers", _NO_HANDLERS), exc)
            if handler is None:
                raise
            if is_async_callable(handler):
                handled = await handler(request, exc)
            else:
                handled = await run_in_threadpool(handler, request, exc)
            exc.__traceback__ = None  # as starlette: a reused exception
            if handled is not None:
                await handled(scope, receive, send)
            return
        if type(response).__call__ is Response.__call__ and response.background is None:
            await response(scope, receive, send)
            return

        async def answer(scope: Scope, receive: Receive, send: Send) -> None:
            await response(scope, receive, send)

        await wrap_app_handling_exceptions(answer, request)(scope, receive, send)

    return app


def _lean(route: BaseRoute) -> None:
    if (
        type(route) is Route
        and inspect.iscoroutinefunction(route.endpoint)
        and getattr(route.app, "__qualname__", "") == "request_response.<locals>.app"
    ):
        route.app = lean_endpoint(route.endpoint)


class IndexedRouter(Router):
    """See the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for route in self.routes:
            _lean(route)
        self._shapes: dict[Shape, list[BaseRoute]] = {}
        self._literals: set[str] | None = None
        self._longest = 0

    def _candidates(self, path: str) -> list[BaseRoute]:
        if self._literals is None:  # the routes are final by the first request
            found = [_segments(route) for route in self.routes]
            self._literals = {s[1] for s in found if s is not None and s[1] is not _ANY}
            self._longest = max((s[0] for s in found if s is not None), default=0)
        count = path.count("/") + 1
        last = path.rsplit("/", 1)[-1]
        shape: Shape = (
            min(count, self._longest + 1),
            last if last in self._literals and count <= self._longest else _ANY,
        )
        routes = self._shapes.get(shape)
        if routes is None:
            routes = []
            for route in self.routes:
                segments = _segments(route)
                if segments is None or (
                    segments[0] == shape[0] and segments[1] in (_ANY, shape[1])
                ):
                    routes.append(route)
            self._shapes[shape] = routes
        return routes

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().app(scope, receive, send)
            return
        if "router" not in scope:
            scope["router"] = self
        partial: BaseRoute | None = None
        partial_scope: Scope = {}
        for route in self._candidates(get_route_path(scope)):
            match, child_scope = route.matches(scope)
            if match is Match.FULL:
                scope["route"] = route
                scope.update(child_scope)
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial, partial_scope = route, child_scope
        if partial is not None:
            scope["route"] = partial
            scope.update(partial_scope)
            await partial.handle(scope, receive, send)
            return
        await super().app(scope, receive, send)  # no route: starlette's fallback
