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
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

import orjson
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
from instance_runtime.tools.client_ip import ip_in_list
from instance_runtime.tools.rate_limit import find_rule

_ALLOW_METHODS = b"GET,HEAD,PUT,PATCH,POST,DELETE"
_SKIP_SUCCESS_LOG = frozenset({"/api/oauth2-redirect", "/api/logs"})  # SkipSuccessActivityLog
_SKIP_SUCCESS_PREFIX = "/api/logs/"
_MAX_ERROR_BODY = 64 << 10  # of an error answer kept for its log entry
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


class RequestPipeline:
    """See the module docstring: the four steps in one ASGI layer (one wrapper of `send`)."""

    def __init__(self, app: ASGIApp, runtime: App) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        if scope["method"] == "OPTIONS":  # 1. CORS preflight, before anything counts it
            await send(
                {"type": "http.response.start", "status": 204, "headers": _preflight(origin, scope)}
            )
            await send({"type": "http.response.body", "body": b""})
            return
        extra = [*_SECURITY_HEADERS, (b"vary", b"Origin")]  # 1. and 3.
        if origin:
            extra.append((b"access-control-allow-origin", b"*"))
        started = time.perf_counter()
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
                elapsed = (time.perf_counter() - started) * 1000
                self._log(scope, status, level, elapsed, error_body)

        async def sender(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [*message.get("headers", []), *extra]
            elif message["type"] == "http.response.body":
                if status >= 400 and len(error_body) < _MAX_ERROR_BODY:
                    error_body += message.get("body", b"")
                if not message.get("more_body", False):
                    # logged before the client has the answer (as PocketBase): its next
                    # request is logged after this one
                    log_once()
            await send(message)

        try:
            refusal = await self._load_auth(scope)  # 4.
            if refusal is not None:
                await error_response(refusal)(scope, receive, sender)
            else:
                await self.app(scope, receive, sender)
        finally:
            log_once()  # no complete answer (an error, a client gone, a stream ended)

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
