"""Custom routes of Python hooks: `RequestEvent` (what a route handler gets) and `RouteTable`
(the one Starlette route of the app that serves every hook route).

Contract:

- `HookRoute(method, path, fn, ...)`: `method` is an HTTP method or `*` (any); `path` starts
  with `/` and names path parameters as PocketBase does, `{name}` (one segment) and
  `{name...}` (the rest of the path). `require_auth` (True, or the names of the auth collections
  allowed) and `require_superuser` refuse first, with PocketBase's `apis.RequireAuth` /
  `RequireSuperuserAuth` answers (401 "The request requires valid record authorization token.",
  403 "The authorized record is not allowed to perform this action.").
- The handler gets a `RequestEvent` and returns a starlette `Response` (`e.json(200, data)`,
  `e.string`, `e.html`, `e.no_content`, `e.redirect`, `e.blob`), a dict or list (answered as
  JSON 200), or None (an empty 200, as PocketBase answers a handler that writes nothing). An
  `async def` handler runs on the event loop; a plain `def` one in a worker thread (as
  Starlette runs sync endpoints). A failure follows `guard.apply_policy`.
- `RouteTable` is a `BaseRoute` placed after the runtime's own routes: a built-in route wins
  over a hook route with the same path (as the more specific pattern wins in PocketBase's
  router), a hook route fills every other path, and hook routes are matched among themselves
  in registration order. It is behind the request pipeline like every route: CORS, the
  request log, the loaded auth, `superuserIPs` and the rate limits (`METHOD /path` labels)
  apply, and errors are PocketBase's JSON. `add` / `remove` swap its (immutable) tuple, so a
  reload never shows a request a half-built table.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Match, NoMatchFound, Route
from starlette.types import Receive, Scope, Send

from instance_runtime.apis.base import (
    DEFAULT_MAX_BODY,
    client_ip,
    json_response,
    read_body,
    request_auth,
    request_info,
)
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.models import Collection
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import SUPERUSERS, RequestInfo
from instance_runtime.hooks.guard import apply_policy, handler_label

if TYPE_CHECKING:
    from starlette.datastructures import URLPath

    from instance_runtime.hooks.app import HooksApp

RouteHandler = Callable[["RequestEvent"], Any]

_SCOPE_KEY = "pocketfleet.hook_route"
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(\.\.\.)?\}")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"})


def starlette_path(path: str) -> str:
    """A PocketBase route path (`/a/{id}`, `/files/{path...}`) in Starlette's syntax."""
    if not path.startswith("/"):
        raise ValueError(f"a route path must start with '/': {path!r}")
    return _PARAM.sub(lambda m: "{" + m.group(1) + (":path}" if m.group(2) else "}"), path)


@dataclass(eq=False)
class RequestEvent:
    """What a custom route's handler gets: the request, its auth, and answer helpers."""

    request: Request
    app: HooksApp
    auth: Record | None = None
    auth_collection: Collection | None = None
    _body: dict[str, Any] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ the request
    @property
    def method(self) -> str:
        return self.request.method.upper()

    @property
    def path_params(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.request.path_params.items()}

    def path_param(self, name: str, default: str = "") -> str:
        """A path parameter of the route (`{name}`), or `default`."""
        return str(self.request.path_params.get(name, default))

    @property
    def query(self) -> dict[str, str]:
        return dict(self.request.query_params)

    def header(self, name: str, default: str = "") -> str:
        return self.request.headers.get(name, default)

    @property
    def is_superuser(self) -> bool:
        return self.auth_collection is not None and self.auth_collection.name == SUPERUSERS

    @property
    def real_ip(self) -> str:
        """The client's address (behind `settings.trustedProxy` when configured)."""
        return client_ip(self.request.scope, self.app.runtime.settings.current)

    async def body(self, limit: int = DEFAULT_MAX_BODY) -> dict[str, Any]:
        """The submitted JSON object or form fields (read once; 400 when malformed, 413 over
        `limit` bytes)."""
        if self._body is None:
            self._body = await read_body(self.request, limit)
        return self._body

    async def request_info(self) -> RequestInfo:
        """The request as API rules see it (`@request.*`)."""
        return await request_info(self.request, self.app.runtime, await self.body())

    # ------------------------------------------------------------------ refusals
    def require_auth(self, *collections: str) -> Record:
        """The auth record; 401 for a guest, 403 when not of one of `collections` (if given)."""
        if self.auth is None or self.auth_collection is None:
            raise ApiError(401, "The request requires valid record authorization token.")
        if collections and self.auth_collection.name not in collections:
            raise ApiError(403, "The authorized record is not allowed to perform this action.")
        return self.auth

    def require_superuser(self) -> Record:
        return self.require_auth(SUPERUSERS)

    def require_guest_only(self) -> None:
        if self.auth is not None:
            raise ApiError(400, "The request can be accessed only by guests.")

    # ------------------------------------------------------------------ answers
    def json(self, status: int, data: Any) -> Response:
        return json_response(data, status)

    def string(self, status: int, text: str) -> Response:
        return Response(text, status_code=status, media_type="text/plain; charset=utf-8")

    def html(self, status: int, text: str) -> Response:
        return Response(text, status_code=status, media_type="text/html; charset=utf-8")

    def blob(self, status: int, content_type: str, data: bytes) -> Response:
        return Response(data, status_code=status, media_type=content_type)

    def no_content(self, status: int = 204) -> Response:
        return Response(status_code=status)

    def redirect(self, status: int, url: str) -> Response:
        return RedirectResponse(url, status_code=status)


def _answer(result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status_code=200)
    if isinstance(result, Mapping | list | tuple):
        return json_response(dict(result) if isinstance(result, Mapping) else list(result))
    raise TypeError(
        f"a route handler must return a Response, a dict, a list or None, not {type(result)}"
    )


class HookRoute:
    """One custom route (see the module docstring)."""

    def __init__(
        self,
        method: str,
        path: str,
        fn: RouteHandler,
        owner: HooksApp,
        *,
        require_auth: bool | Sequence[str] = False,
        require_superuser: bool = False,
    ) -> None:
        method = method.upper()
        if method not in METHODS:
            raise ValueError(f"unknown HTTP method {method!r}")
        self.method, self.path, self.fn, self.owner = method, path, fn, owner
        if isinstance(require_auth, str):
            require_auth = [require_auth]
        self.require_auth = require_auth
        self.require_superuser = require_superuser
        self.label = handler_label(fn)
        methods = None if method == "*" else [method]
        self.route = Route(starlette_path(path), self._endpoint, methods=methods)

    async def _endpoint(self, request: Request) -> Response:
        runtime: App = request.app.state.runtime
        found = await request_auth(request, runtime)
        event = RequestEvent(request, self.owner)
        if found is not None:
            event.auth_collection, event.auth = found
        if self.require_superuser:
            event.require_superuser()
        elif self.require_auth:
            names = [] if self.require_auth is True else list(self.require_auth)
            event.require_auth(*names)
        try:
            if inspect.iscoroutinefunction(self.fn):
                result = await self.fn(event)
            else:
                result = await run_in_threadpool(self.fn, event)
                if inspect.isawaitable(result):
                    result = await result
            return _answer(result)
        except Exception as exc:
            replacement = apply_policy(exc, self.label)
            if replacement is exc:
                raise
            raise replacement from exc


class RouteTable(BaseRoute):
    """See the module docstring."""

    def __init__(self) -> None:
        self._routes: tuple[HookRoute, ...] = ()

    @property
    def routes(self) -> tuple[HookRoute, ...]:
        return self._routes

    def add(self, route: HookRoute) -> None:
        self._routes = (*self._routes, route)

    def remove(self, route: HookRoute) -> None:
        self._routes = tuple(r for r in self._routes if r is not route)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http":
            return Match.NONE, {}
        partial: tuple[HookRoute, Scope] | None = None
        for hook_route in self._routes:
            match, child = hook_route.route.matches(scope)
            if match is Match.FULL:
                return Match.FULL, {**child, _SCOPE_KEY: hook_route}
            if match is Match.PARTIAL and partial is None:
                partial = (hook_route, child)
        if partial is not None:
            return Match.PARTIAL, {**partial[1], _SCOPE_KEY: partial[0]}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        hook_route: HookRoute = scope[_SCOPE_KEY]
        await hook_route.route.handle(scope, receive, send)
