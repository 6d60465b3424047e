"""A size limit and a read timeout on request bodies of the apex (API and dashboard).

Routes of the control plane take JSON documents and dashboard forms, so one limit,
`PF_MAX_BODY_BYTES` (1 MiB), covers them, except the few routes given a limit of their own
(`BodyLimitOverride`: the files API's uploads, `PF_FILES_MAX_FILE_MB`); instance traffic never
passes here (see `proxy.hostrouting.HostDispatcher`), so tenants' own uploads are not limited.

uvicorn bounds the request line and headers (h11's 16 KiB) and the idle time between requests
(`timeout_keep_alive`), but not how long a body may take: a client sending one byte now and
then holds its request open forever. `read_timeout_s` bounds the wait for each piece of a body
(as nginx's `client_body_timeout` does).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.api.errors import error_body


class _BodyRefused(Exception):
    """Raised into the app from `receive` once the refusal has been sent."""


_CLOSE: Final = (b"connection", b"close")


@dataclass(frozen=True)
class BodyLimitOverride:
    """`max_bytes` instead of the middleware's own limit for requests of `method` whose path
    matches `path` (`re.match`)."""

    method: str
    path: re.Pattern[str]
    max_bytes: int


class BodyLimitMiddleware:
    """Pure ASGI. For an HTTP request:

    - a declared `Content-Length` over `max_bytes` gets 413 at once: the app is not called and
      no byte of the body is read; an unparsable one gets 400;
    - a body without a declared length (chunked) is counted as the app reads it; once it
      passes `max_bytes`, 413;
    - a body that stalls `read_timeout_s` seconds between two pieces gets 408.

    Refusals are JSON in the API's error shape (`control_plane.api.errors`) with
    `Connection: close`: the rest of the body is never read. A refusal met while the app
    reads is sent by the middleware itself, if no response has started: the app's `receive`
    raises, and whatever the app sends or raises afterwards is dropped. After the response
    started, the exception goes up to the server, which closes the connection.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        read_timeout_s: float | None,
        overrides: Sequence[BodyLimitOverride] = (),
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.read_timeout_s = read_timeout_s
        self.overrides = tuple(overrides)

    def limit_of(self, scope: Scope) -> int:
        """The body limit of the request `scope`: the first override that matches, else ours."""
        for override in self.overrides:
            if scope["method"] == override.method and override.path.match(scope["path"]):
                return override.max_bytes
        return self.max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        lengths = [value for name, value in scope["headers"] if name == b"content-length"]
        declared: int | None = None
        if lengths:
            try:
                declared = int(lengths[0])
            except ValueError:
                declared = -1
            if declared < 0 or any(value != lengths[0] for value in lengths):
                await _refuse(send, 400, "bad_request", "the Content-Length header is invalid")
                return
        max_bytes = self.limit_of(scope)
        if declared is not None and declared > max_bytes:
            await _refuse(send, 413, "too_large", _too_large(max_bytes))
            return
        guard = _Guard(self, max_bytes, receive, send)
        try:
            await self.app(scope, guard.receive, guard.send)
        except Exception:
            if not guard.refused:
                raise
            # the refusal is sent; what the app made of its failed read does not matter


def _too_large(max_bytes: int) -> str:
    return f"the request body is larger than the {max_bytes} bytes allowed"


class _Guard:
    """The `receive` and `send` one request's app gets (see `BodyLimitMiddleware`)."""

    def __init__(
        self, limit: BodyLimitMiddleware, max_bytes: int, receive: Receive, send: Send
    ) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self._receive = receive
        self._send = send
        self.received = 0
        self.body_done = False
        self.started = False
        self.refused = False

    async def receive(self) -> Message:
        if self.refused:
            raise _BodyRefused()
        if self.body_done or self.limit.read_timeout_s is None:
            message = await self._receive()
        else:
            try:
                async with asyncio.timeout(self.limit.read_timeout_s):
                    message = await self._receive()
            except TimeoutError:
                seconds = f"{self.limit.read_timeout_s:g}"
                await self._refuse(408, "timeout", f"the request body stalled for {seconds} s")
                raise _BodyRefused() from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            self.body_done = not message.get("more_body", False)
            if self.received > self.max_bytes:
                await self._refuse(413, "too_large", _too_large(self.max_bytes))
                raise _BodyRefused()
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def _refuse(self, status: int, code: str, message: str) -> None:
        if self.started:  # too late for a status: the server closes the connection
            raise _BodyRefused()
        self.refused = True
        await _refuse(self._send, status, code, message)


async def _refuse(send: Send, status: int, code: str, message: str) -> None:
    body = error_body(status, message, code=code)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        _CLOSE,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
