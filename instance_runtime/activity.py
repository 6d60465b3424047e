"""Activity reports: the runtime tells the control plane when it serves requests and how many
event streams it holds open, on a channel of their own that no public proxy routes.

Enabled when the environment has `PF_ACTIVITY_SOCKET`, the path of the control plane's Unix
datagram socket. Each report is one datagram, a JSON object

    {"last_request_at": UNIX_TIME, "requests": N, "in_flight": N, "streams": N}

(`requests`: finished or started since the previous report; `streams`: responses of type
`text/event-stream` now open). Who sent it is not in it: the receiver learns the sender from
the kernel (the process's credentials), so an instance can only ever speak for itself.

Reports are sent on change, at most one per `interval_s` (the first change after a quiet spell
at once), and repeated every `heartbeat_s` while a stream is open so that the receiver can let
go of counts that were never closed (a crashed process). Nothing is sent while idle. Sending
never blocks or fails a request: the socket is non-blocking, and a report the receiver cannot
take (absent, full) is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ENV_SOCKET = "PF_ACTIVITY_SOCKET"
_EVENT_STREAM = b"text/event-stream"


class ActivityReporter:
    """Counts what the instance serves and sends the reports (see the module docstring)."""

    def __init__(self, path: str, *, interval_s: float = 1.0, heartbeat_s: float = 10.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self.heartbeat_s = heartbeat_s
        self.last_request_at = 0.0
        self.requests = 0
        self.in_flight = 0
        self.streams = 0
        self._sent_at = float("-inf")
        self._pending: asyncio.TimerHandle | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    def request_started(self) -> None:
        self.last_request_at = time.time()
        self.requests += 1
        self.in_flight += 1
        self._changed()

    def request_finished(self) -> None:
        self.last_request_at = time.time()
        self.in_flight = max(0, self.in_flight - 1)
        self._changed()

    def stream_opened(self) -> None:
        self.streams += 1
        self._changed()

    def stream_closed(self) -> None:
        self.streams = max(0, self.streams - 1)
        self._changed()

    def _changed(self) -> None:
        if self._pending is not None:
            return
        wait = self._sent_at + self.interval_s - time.monotonic()
        if wait <= 0:
            self.flush()
        else:
            self._pending = asyncio.get_running_loop().call_later(wait, self.flush)

    def flush(self) -> None:
        """Send a report now (and schedule the heartbeat while streams are open)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        report = {
            "last_request_at": self.last_request_at,
            "requests": self.requests,
            "in_flight": self.in_flight,
            "streams": self.streams,
        }
        self.requests = 0
        self._sent_at = time.monotonic()
        with contextlib.suppress(OSError):  # no receiver, or its queue is full: dropped
            self._sock.sendto(json.dumps(report).encode(), self.path)
        if self.streams > 0:
            with contextlib.suppress(RuntimeError):  # no running loop: at shutdown
                loop = asyncio.get_running_loop()
                self._pending = loop.call_later(self.heartbeat_s, self.flush)

    def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._sock.close()


class ActivityMiddleware:
    """Pure ASGI: every HTTP request is counted by `reporter`; a response that starts as
    `text/event-stream` counts as an open stream until it ends."""

    def __init__(self, app: AsgiApp, reporter: ActivityReporter) -> None:
        self.app = app
        self.reporter = reporter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        reporter = self.reporter
        streaming = False

        async def watch(message: Message) -> None:
            nonlocal streaming
            if message["type"] == "http.response.start" and not streaming:
                headers = dict(message.get("headers", ()))
                if headers.get(b"content-type", b"").startswith(_EVENT_STREAM):
                    streaming = True
                    reporter.stream_opened()
            await send(message)

        reporter.request_started()
        try:
            await self.app(scope, receive, watch)
        finally:
            if streaming:
                reporter.stream_closed()
            reporter.request_finished()
