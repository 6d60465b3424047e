"""The request pipeline: PocketBase's default middlewares (`apis/middlewares*.go`) in its order,
as one pure ASGI middleware (`RequestPipeline`, installed by `server.create_app`):

1. CORS: PocketBase's default CORS (any origin, `Vary: Origin`); an `OPTIONS` preflight is
   answered 204 here, before anything counts it.
2. request log: times every request and adds PocketBase's log entry to `app.request_log`
   just before the last part of its answer goes out (so requests are logged in the order
   their clients saw the answers)
   (`core.logs`: written in batches by its own thread, never waited for) when the log keeps
   its level (`settings.logs.maxDays` not 0, `minLevel`): INFO, or ERROR for a status >= 400
   with the answer's `message` as `error` and its `data` as `details`; the client address only
   with `logs.logIP`, the auth record's id only with `logs.logAuthId`. A successful
   `/api/oauth2-redirect` (its URL carries the code) or `/api/logs...` is never logged.
3. security headers: `X-XSS-Protection`, `X-Content-Type-Options`, `X-Frame-Options`.
4. auth: verifies the `Authorization` token once (an invalid one is a guest), refuses a
   superuser from outside `settings.superuserIPs` (403), then applies the global rate limit
   (`METHOD path` and `path` labels; 429). Handlers read the result with `base.request_auth`.

Errors answered here are PocketBase's JSON; everything else passes through unchanged.

With `gate`, `exception_handlers` and `server_error` (as `server.create_app` installs it, as the
app's whole middleware stack), the same layer also does, for HTTP requests, what three more
layers did before it, with the same effects and without their frames and `send` wrappers:

0. restart gate (outermost): `await gate.enter()` ... `gate.leave()` around the request
   (`core.restart_gate`: requests wait while a restore restarts the app).
5. starlette's `ExceptionMiddleware` (innermost): the handlers are put in the scope for the
   routes (`starlette.exception_handlers`); an exception out of the router with a handler (a
   404/405 `HTTPException`, an `ApiError`) is answered by it through steps 1-3, unless the answer
   had started (then a `RuntimeError`, as starlette).
6. starlette's `ServerErrorMiddleware`: any other exception (after its log entry, a 500) is
   answered by `server_error` unless the answer had started, and re-raised for the server.
Any other scope (lifespan) goes through starlette's `ExceptionMiddleware` to `app`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import unquote

import orjson
from starlette._utils import is_async_callable
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from instance_runtime.apis.base import (
    AUTH_SCOPE_KEY,
    audiences,
    authenticate,
    client_ip,
    error_response,
    rate_limit,
    remote_ip,
    skip_rate_limit,
)
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, forbidden
from instance_runtime.core.logs import ERROR, INFO
from instance_runtime.core.request_info import SUPERUSERS
from instance_runtime.core.restart_gate import RestartGate
from instance_runtime.tools.client_ip import ip_in_list
from instance_runtime.tools.rate_limit import find_rule

_ALLOW_METHODS = b"GET,HEAD,PUT,PATCH,POST,DELETE"
_SKIP_SUCCESS_LOG = frozenset({"/api/oauth2-redirect", "/api/logs"})  # SkipSuccessActivityLog
_SKIP_SUCCESS_PREFIX = "/api/logs/"
_MAX_ERROR_BODY = 64 << 10  # of an error answer kept for its log entry
ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]
_HANDLERS_KEY = "starlette.exception_handlers"
_SECURITY_HEADERS = [
    (b"x-xss-protection", b"1; mode=block"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"SAMEORIGIN"),
    (b"cross-origin-opener-policy", b"same-origin"),  # 0.40: against tab-nabbing
]


def _header(scope: Scope, name: bytes) -> str:
    """The first value of header `name` (lower-case), read off the raw scope."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def _cut(text: str, limit: int) -> str:
    """PocketBase's `cutStr`: at most `limit` characters, then `...`."""
    return text[:limit] + "..." if len(text) > limit else text


def _details(data: Any) -> Any:
    """An error answer's `data` as PocketBase logs it (`ApiError.RawData()`): None when empty,
    a validation error as its plain message (`cannot be blank`)."""
    if not data:
        return None
    if not isinstance(data, dict):
        return data
    if isinstance(data.get("code"), str) and isinstance(data.get("message"), str):
        text = str(data["message"]).removesuffix(".")
        return text[:1].lower() + text[1:]
    return {key: _details(value) for key, value in data.items()}


def _error_of(body: bytes) -> tuple[str, Any] | None:
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(answer, dict) or not isinstance(answer.get("message"), str):
        return None
    return str(answer["message"]), _details(answer.get("data"))


def _preflight(origin: str, scope: Scope) -> list[tuple[bytes, bytes]]:
    headers = [(b"vary", b"Origin")]
    if origin:
        headers += [
            (b"access-control-allow-origin", b"*"),
            (b"vary", b"Access-Control-Request-Method"),
            (b"vary", b"Access-Control-Request-Headers"),
            (b"access-control-allow-methods", _ALLOW_METHODS),
        ]
        wanted = _header(scope, b"access-control-request-headers")
        if wanted:
            headers.append((b"access-control-allow-headers", wanted.encode("latin-1")))
    return headers


def handler_for(handlers: tuple[dict[Any, Any], dict[int, Any]], exc: Exception) -> Any:
    """The handler starlette's `wrap_app_handling_exceptions` picks for `exc` (None: none)."""
    exception_handlers, status_handlers = handlers
    handler = None
    if isinstance(exc, HTTPException):
        handler = status_handlers.get(exc.status_code)
    if handler is None:
        for cls in type(exc).__mro__:
            if cls in exception_handlers:
                return exception_handlers[cls]
    return handler


class RequestPipeline:
    """See the module docstring: the steps in one ASGI layer (one wrapper of `send`)."""

    def __init__(
        self,
        app: ASGIApp,
        runtime: App,
        *,
        gate: RestartGate | None = None,
        exception_handlers: Mapping[Any, ErrorHandler] | None = None,
        server_error: ErrorHandler | None = None,
    ) -> None:
        self.app = app
        self.runtime = runtime
        self.gate = gate
        self.server_error = server_error
        self._other = ExceptionMiddleware(app, handlers=exception_handlers)  # same handlers
        self._handlers = (self._other._exception_handlers, self._other._status_handlers)
        self._catch = exception_handlers is not None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await (self._other if self._catch else self.app)(scope, receive, send)
            return
        gate = self.gate
        if gate is None:
            await self._serve(scope, receive, send)
            return
        await gate.enter()  # 0.
        try:
            await self._serve(scope, receive, send)
        finally:
            gate.leave()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False  # the answer's start went out (to `send`)
        origin = _header(scope, b"origin")
        if scope["method"] == "OPTIONS":  # 1. CORS preflight, before anything counts it
            started = True
            await send(
                {"type": "http.response.start", "status": 204, "headers": _preflight(origin, scope)}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        extra = [*_SECURITY_HEADERS, (b"vary", b"Origin")]  # 1. and 3.
        if origin:
            extra.append((b"access-control-allow-origin", b"*"))
        started_at = time.perf_counter()
        status = 0
        error_body = b""
        logged = False

        def log_once() -> None:  # 2.
            nonlocal logged, status
            if logged:
                return
            logged = True
            status = status or 500
            path = scope["path"]
            skipped = status < 400 and (
                path in _SKIP_SUCCESS_LOG or path.startswith(_SKIP_SUCCESS_PREFIX)
            )
            level = ERROR if status >= 400 else INFO
            if not skipped and self.runtime.request_log.enabled(level):
                elapsed = (time.perf_counter() - started_at) * 1000
                self._log(scope, status, level, elapsed, error_body)

        async def sender(message: Message) -> None:
            nonlocal status, error_body, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), *extra]
                started = True
            elif message["type"] == "http.response.body":
                if status >= 400 and len(error_body) < _MAX_ERROR_BODY:
                    error_body += message.get("body", b"")
                if not message.get("more_body", False):
                    # logged before the client has the answer (as PocketBase): its next
                    # request is logged after this one
                    log_once()
            await send(message)

        try:
            try:
                refusal = await self._load_auth(scope)  # 4.
                if refusal is not None:
                    await error_response(refusal)(scope, receive, sender)
                elif not self._catch:
                    await self.app(scope, receive, sender)
                else:
                    scope[_HANDLERS_KEY] = self._handlers
                    try:
                        await self.app(scope, receive, sender)
                    except Exception as exc:  # 5.
                        handler = handler_for(self._handlers, exc)
                        if handler is None:
                            raise
                        if started:
                            message = "Caught handled exception, but response already started."
                            raise RuntimeError(message) from exc
                        request = Request(scope, receive, sender)
                        if is_async_callable(handler):
                            response = await handler(request, exc)
                        else:
                            response = await run_in_threadpool(handler, request, exc)
                        if response is not None:
                            await response(scope, receive, sender)
                        exc.__traceback__ = None  # as starlette: a reused exception
            finally:
                log_once()  # no complete answer (an error, a client gone, a stream ended)
        except Exception as exc:  # 6.
            if self.server_error is None:
                raise
            response = await self.server_error(Request(scope), exc)
            if not started:
                await response(scope, receive, send)
            raise exc

    async def _load_auth(self, scope: Scope) -> ApiError | None:
        found = await authenticate(_header(scope, b"authorization"), self.runtime)
        scope[AUTH_SCOPE_KEY] = found
        settings = self.runtime.settings.current
        try:
            is_superuser = found is not None and found[0].name == SUPERUSERS
            allowed_ips = settings.get("superuserIPs") or []
            if (
                is_superuser
                and allowed_ips
                and not ip_in_list(allowed_ips, client_ip(scope, settings))
            ):
                raise forbidden()
            if not skip_rate_limit(self.runtime, scope):
                path = str(scope["path"])
                labels = (f"{scope['method']} {path}", path)
                rules = settings["rateLimits"].get("rules") or []
                rule = find_rule(rules, labels, audiences(scope))
                if rule is not None:
                    limiter_id = f"{rule['label']}{rule.get('audience', '')}"
                    rate_limit(self.runtime, scope, limiter_id, rule)
        except ApiError as exc:
            return exc
        return None

    def _log(self, scope: Scope, status: int, level: int, elapsed_ms: float, body: bytes) -> None:
        settings = self.runtime.settings.current
        logs = settings["logs"]
        query = scope.get("query_string", b"").decode("latin-1")
        url = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        url = _cut(url + ("?" + query if query else ""), 3000)
        method = _cut(str(scope["method"]).upper(), 50)
        data: dict[str, Any] = {
            "type": "request",
            "execTime": elapsed_ms,
            "url": url,
            "method": method,
            "status": status,
            "referer": _cut(_header(scope, b"referer"), 2000),
            "userAgent": _cut(_header(scope, b"user-agent"), 2000),
        }
        if status >= 400:
            error = _error_of(body)
            if error is not None:
                data["error"], data["details"] = error
        found = scope.get(AUTH_SCOPE_KEY)
        data["auth"] = found[0].name if found else ""
        if found and logs.get("logAuthId"):
            data["authId"] = str(found[1].get("id", ""))
        if logs.get("logIP"):
            data["userIP"] = client_ip(scope, settings)
            data["remoteIP"] = remote_ip(scope)
        message = f"{method} {unquote(url) if '%' in url else url}"
        self.runtime.request_log.add(level, message, data)
