"""An httpx transport for plain HTTP/1.1 upstreams: the instances the proxy forwards to.

httpx's default transport (httpcore) scans its whole pool several times per request and
checks every idle connection with a `poll()` system call: in front of hundreds of instances
with long-lived event streams, that would be most of the proxy's cost. This transport keeps a
stack of idle keep-alive connections per origin (taking or returning one is O(1); a
connection the upstream closes leaves the pool as soon as the close arrives), parses
responses with httptools (llhttp, the parser uvicorn uses) and streams bodies both ways with
flow control: a slow reader pauses reading from the upstream, a slow upstream pauses the
request body.

Scope: `http://` origins speaking HTTP/1.1, no TLS, HTTP/2, proxies or upgrades. Timeouts
come from the request's `timeout` extension as httpx sets it (`connect`, `read` per wait for
response data, `write` per wait for the upstream to take request data); `None` waits forever.
Errors are httpx's: `ConnectError`/`ConnectTimeout`, `ReadTimeout`, `WriteTimeout`,
`RemoteProtocolError`. A request without a body that finds its reused connection closed by
the upstream before any response byte is retried once on a new connection.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from enum import Enum
from typing import Final, cast

import httptools
import httpx

Origin = tuple[str, int]

# Response body buffered per connection before reading from the upstream pauses (until the
# reader takes it).
_HIGH_WATER: Final = 256 * 1024


class UpstreamTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections to upstreams, at most `max_idle_per_origin` idle per
    origin, each closed after `idle_expiry` seconds unused (keep that below the upstreams'
    own idle timeout: uvicorn's is 5 s)."""

    def __init__(self, *, max_idle_per_origin: int = 32, idle_expiry: float = 3.0) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._max_idle = max_idle_per_origin
        self._idle_expiry = idle_expiry
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(
                f"only http:// is supported, not {url}", request=request
            )
        origin = (url.host, url.port or 80)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        head, framing = _request_head(request)
        connection = self._take(origin)
        if connection is not None:
            try:
                return await connection.exchange(request, head, framing, timeouts)
            except _Disconnected:
                if framing is not _Framing.NONE:
                    raise
        connection = await self._connect(origin, request, timeouts.get("connect"))
        return await connection.exchange(request, head, framing, timeouts)

    async def aclose(self) -> None:
        """Close the idle connections; connections in use close when their response does."""
        self._closed = True
        idle, self._idle = self._idle, {}
        for stack in idle.values():
            for connection in stack:
                connection.leave_pool()
                connection.close()

    async def _connect(
        self, origin: Origin, request: httpx.Request, timeout: float | None
    ) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, origin), *origin
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(
                f"connecting to {origin} timed out", request=request
            ) from exc
        except OSError as exc:
            raise httpx.ConnectError(f"connecting to {origin}: {exc}", request=request) from exc
        return connection

    def _take(self, origin: Origin) -> _Connection | None:
        stack = self._idle.get(origin)
        while stack:
            connection = stack.pop()
            connection.leave_pool()
            if not connection.closed:
                return connection
        return None

    def _release(self, connection: _Connection) -> None:
        """Keep `connection` for the next request to its origin, or close it."""
        stack = self._idle.get(connection.origin)
        if stack is None:
            stack = self._idle[connection.origin] = []
        if self._closed or len(stack) >= self._max_idle:
            connection.close()
            return
        stack.append(connection)
        connection.enter_pool(self._idle_expiry)

    def _discard(self, connection: _Connection) -> None:
        """Forget an idle `connection` (it expired or the upstream closed it)."""
        stack = self._idle.get(connection.origin)
        if stack is not None and connection in stack:
            stack.remove(connection)
            if not stack:
                del self._idle[connection.origin]


class _Framing(Enum):
    """How a request body is framed."""

    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"


class _Disconnected(httpx.RemoteProtocolError):
    """The upstream closed the connection before sending any byte of a response."""


def _request_head(request: httpx.Request) -> tuple[bytes, _Framing]:
    """The request line and headers, and how the body is framed.

    Raises `httpx.LocalProtocolError` if the target or a header would break the framing
    (CR, LF or NUL in them).
    """
    target: bytes = request.extensions.get("target") or request.url.raw_path
    parts = [request.method.encode("ascii"), b" ", target, b" HTTP/1.1\r\n"]
    framing = _Framing.NONE
    has_host = False
    raw = request.headers.raw
    for name, value in raw:
        parts += (name, b": ", value, b"\r\n")
        lowered = name.lower()
        if lowered == b"host":
            has_host = True
        elif lowered == b"content-length":
            if value != b"0":
                framing = _Framing.LENGTH
        elif lowered == b"transfer-encoding":
            framing = _Framing.CHUNKED
    lines = len(raw) + 2
    if not has_host:
        parts += (b"host: ", request.url.netloc, b"\r\n")
        lines += 1
    parts.append(b"\r\n")
    head = b"".join(parts)
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
        raise httpx.LocalProtocolError("CR, LF or NUL in the request target or a header")
    return head, framing


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: one exchange at a time, then back to the pool or closed."""

    def __init__(self, pool: UpstreamTransport, origin: Origin) -> None:
        self._pool = pool
        self.origin = origin
        self.closed = False
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self._idle_timer: asyncio.TimerHandle | None = None
        # Per exchange.
        self._head_only = False
        self._head: asyncio.Future[None] | None = None
        self._received = False
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._reusable = False
        self._body_unsent = False
        self._error: httpx.TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        # Flow control.
        self._reading_paused = False
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None

    # -- the exchange, driven by the transport and the response body ---------------------

    async def exchange(
        self,
        request: httpx.Request,
        head: bytes,
        framing: _Framing,
        timeouts: dict[str, float | None],
    ) -> httpx.Response:
        if self.closed or self._transport is None:
            raise _Disconnected("the upstream closed the connection", request=request)
        self._head_only = request.method == "HEAD"
        self._head = self._loop.create_future()
        self._received = self._complete = self._reusable = self._body_unsent = False
        self._error = None
        try:
            self._transport.write(head)
            if framing is not _Framing.NONE:
                await self._send_body(request, framing is _Framing.CHUNKED, timeouts.get("write"))
            await _wait(self._head, timeouts.get("read"))
        except TimeoutError as exc:
            self.close()
            raise httpx.ReadTimeout(
                "no response from the upstream in time", request=request
            ) from exc
        except httpx.TransportError as exc:
            self.close()
            exc.request = request
            raise
        except BaseException:
            self.close()
            raise
        return httpx.Response(
            self._status,
            headers=self._headers,
            stream=_ResponseBody(self, request, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1"},
        )

    async def _send_body(
        self, request: httpx.Request, chunked: bool, timeout: float | None
    ) -> None:
        assert self._transport is not None and self._head is not None
        stream = request.stream
        assert isinstance(stream, httpx.AsyncByteStream)
        async for chunk in stream:
            if self._head.done() or self.closed:
                # The upstream answered (or failed) before taking the whole body.
                self._body_unsent = True
                return
            if not chunk:
                continue
            if chunked:
                self._transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
            else:
                self._transport.write(chunk)
            if self._write_paused:
                await self._wait_drain(request, timeout)
        if chunked and not self.closed:
            self._transport.write(b"0\r\n\r\n")

    async def _wait_drain(self, request: httpx.Request, timeout: float | None) -> None:
        self._drain = self._loop.create_future()
        try:
            await _wait(self._drain, timeout)
        except TimeoutError as exc:
            raise httpx.WriteTimeout("the upstream took no data in time", request=request) from exc

    async def read_body(self, request: httpx.Request, timeout: float | None) -> bytes | None:
        """The next body bytes received (all that are buffered), or None at the end."""
        while True:
            body = self._body
            if body:
                chunk = body.popleft() if len(body) == 1 else b"".join(body)
                body.clear()
                self._buffered = 0
                if self._reading_paused and self._transport is not None:
                    self._reading_paused = False
                    self._transport.resume_reading()
                return chunk
            if self._complete:
                return None
            if self._error is not None:
                self._error.request = request
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await _wait(self._waiter, timeout)
            except TimeoutError as exc:
                raise httpx.ReadTimeout(
                    "the upstream sent nothing in time", request=request
                ) from exc

    def finish(self) -> None:
        """The response is done with: reuse the connection if it is clean, else close it."""
        if (
            self._complete
            and self._reusable
            and not self._body_unsent
            and not self._body
            and not self.closed
        ):
            self._pool._release(self)
        else:
            self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def enter_pool(self, expiry: float) -> None:
        self._head = None  # from now on, bytes from the upstream are out of turn
        self._idle_timer = self._loop.call_later(expiry, self._expire)

    def leave_pool(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _expire(self) -> None:
        self._idle_timer = None
        self._pool._discard(self)
        self.close()

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self._head is None or self._complete:
            # Nothing (more) was asked: an upstream talking out of turn is not to be trusted.
            self.close()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("unexpected protocol upgrade by the upstream"))
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"invalid response from the upstream: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._idle_timer is not None:
            self.leave_pool()
            self._pool._discard(self)
        head = self._head
        if head is not None and not head.done():
            if self._received:
                self._fail(httpx.RemoteProtocolError("the upstream closed mid-response"))
            else:
                self._fail(_Disconnected("the upstream closed the connection"))
        elif not self._complete:
            if self._close_delimited():
                self._complete = True
            elif head is not None:
                self._error = httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
        self._wake()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # -- httptools callbacks -------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            return  # informational (1xx): the final response follows
        self._status = status
        if self._head_only:
            self._complete = True
            self._reusable = False  # llhttp cannot be told that no body follows a HEAD
        head = self._head
        if head is not None and not head.done():
            head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self._transport:
            self._reading_paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._parser.get_status_code() < 200:
            return
        self._complete = True
        self._reusable = self._parser.should_keep_alive() and not self._head_only
        self._wake()

    # -- helpers -------------------------------------------------------------------------

    def _fail(self, error: httpx.TransportError) -> None:
        self._error = error
        head = self._head
        if head is not None and not head.done():
            head.set_exception(error)
        self._wake()
        self.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _close_delimited(self) -> bool:
        """Whether the response body ends when the connection does (no length, not chunked)."""
        if self._status in (204, 304) or self._head_only or self._head is None:
            return False
        framing = {b"content-length", b"transfer-encoding"}
        return not any(name.lower() in framing for name, _ in self._headers)


async def _wait(future: asyncio.Future[None], timeout: float | None) -> None:
    """Await `future`, for at most `timeout` seconds (TimeoutError) unless None."""
    if timeout is None:
        await future
    else:
        async with asyncio.timeout(timeout):
            await future


class _ResponseBody(httpx.AsyncByteStream):
    """A response body as it arrives; closing it early closes the connection."""

    def __init__(
        self, connection: _Connection, request: httpx.Request, timeout: float | None
    ) -> None:
        self._connection = connection
        self._request = request
        self._timeout = timeout
        self._done = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        try:
            while (chunk := await connection.read_body(self._request, self._timeout)) is not None:
                yield chunk
        except BaseException:
            self._done = True
            connection.close()
            raise
        self._done = True
        connection.finish()

    async def aclose(self) -> None:
        if not self._done:
            self._done = True
            self._connection.finish()
