"""The embedded proxy: an ASGI app that serves the route table to HTTP clients.

It sits in front of every instance request when pocketfleet runs without Caddy, so the hot
path is kept short: one dict lookup for the route, one pass over the request headers, the
body streamed both ways chunk by chunk as it arrives (never buffered whole), and no parsing
of what flows through (compressed bodies and server-sent events pass untouched).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Iterable
from functools import lru_cache
from typing import Final
from urllib.parse import parse_qs, quote

import httpx
import orjson
from starlette.types import Message, Receive, Scope, Send

from proxy.activity import ActivityTracker
from proxy.handoff import EXPIRED_PAGE, HANDOFF_PATH, HandoffStore, handoff_page
from proxy.hostrouting import normalize_host, request_host
from proxy.routes import Route, RouteState, RouteTable, Upstream
from proxy.transport import UpstreamTransport
from proxy.wake import WakeFailed, Waker, wake_within

log = logging.getLogger(__name__)

# Hop-by-hop headers (RFC 9110 section 7.6.1): they describe one connection, so they are
# dropped in both directions, with any header a `Connection` header names and `Proxy-*`.
_HOP_BY_HOP: Final = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Request headers this hop answers or rewrites itself: the ASGI server answers
# `Expect: 100-continue`, and the X-Forwarded-* headers are set from the connection.
_REPLACED: Final = frozenset(
    {b"expect", b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"}
)

_SSE: Final = b"text/event-stream"
_END: Final[Message] = {"type": "http.response.body", "body": b"", "more_body": False}
_NO_BODY: Final = httpx.ByteStream(b"")
# Upstream timeouts (seconds, None: no limit), as httpx's `timeout` request extension: no
# read timeout (server-sent events stay open for hours), a short connect timeout (an instance
# on loopback answers at once or not at all), a write timeout for an upstream that stops
# reading a request body.
_TIMEOUTS: Final[dict[str, float | None]] = {
    "connect": 5.0,
    "read": None,
    "write": 60.0,
    "pool": None,
}
# Seconds a client is told to wait before retrying an asleep instance.
_ASLEEP_RETRY_AFTER: Final = b"1"
# Pauses between attempts to connect to an upstream that refuses connections while its
# route stays up: PocketBase restarts itself when its hooks change (a deploy, an SFTP
# upload), and answers again a moment later. About 3 s in all, then 502.
_REFUSED_RETRY_S: Final = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0)


class EmbeddedProxy:
    """ASGI app that forwards each request to the upstream its `Host` is routed to.

    Contract, for an HTTP request whose host (see `normalize_host`) is in `table`:

    - `UP`: the request goes to the route's upstream with the raw path and query string
      exactly as received, the body streamed, hop-by-hop headers dropped, `Host` kept as the
      client sent it, `X-Forwarded-For` appended with the client address and
      `X-Forwarded-Proto`/`X-Forwarded-Host` set. The response status, headers (repeated
      ones such as `Set-Cookie` included) and raw body bytes come back as they arrive. A
      client leaving mid-response closes the upstream response. An upstream that refuses the
      connection or fails before answering gives 502, after trying to connect again for
      about 3 s while its route stays up at that upstream (the request was not sent: any
      method may be tried again).
    - `ASLEEP`: with a `Waker` (see `proxy.wake`, `use_waker`), the request is held while
      the instance wakes and then forwarded as if it had been `UP`; a wake that fails or takes
      longer than `wake_timeout_s` gives 503 with `Retry-After` (a woken request logs one
      info line: how long its wake, its answer's first byte and its last byte took). Without
      a waker: 503 with `Retry-After`.
    - `STOPPED`: 503.
    - Hosts not in the table: 404.

    Errors use PocketBase's shape: `{"status": N, "message": "...", "data": {}}`. Every
    request for a routed host counts in `activity`, and as in flight while it is forwarded;
    an event stream (`text/event-stream`) counts as open from its response headers until it
    ends. WebSocket connections are
    refused (PocketBase's realtime API is server-sent events). Lifespan shutdown closes the
    upstream transport if the proxy created it; an app that mounts the proxy (see
    `HostDispatcher`) calls `aclose()` instead.

    `GET /_pf/handoff?code=CODE` on a routed host is answered here, not forwarded, when the
    proxy has a `HandoffStore` (see `proxy.handoff`): the single-use sign-in page of CODE.

    Requests go to `transport` (default: `UpstreamTransport`), any httpx transport: the seam
    where tests may put another (`httpx.ASGITransport`, `httpx.MockTransport`). The proxy
    uses the transport API rather than an `httpx.AsyncClient`: a client's auth, redirects,
    cookie jar and default headers have no place in a relay, and skipping them takes about a
    quarter off the proxy's cost per request.
    """

    def __init__(
        self,
        table: RouteTable,
        activity: ActivityTracker,
        transport: httpx.AsyncBaseTransport | None = None,
        handoffs: HandoffStore | None = None,
    ) -> None:
        self._table = table
        self._activity = activity
        self._handoffs = handoffs
        self._waker: Waker | None = None
        self._wake_timeout_s = 15.0
        self._owns_transport = transport is None
        self._transport = UpstreamTransport() if transport is None else transport

    def use_waker(self, waker: Waker | None, timeout_s: float) -> None:
        """Wake asleep hosts through `waker` from now on (None: answer them 503), holding a
        request at most `timeout_s` seconds."""
        self._waker = waker
        self._wake_timeout_s = timeout_s

    async def aclose(self) -> None:
        """Close the upstream transport if the proxy created it (idempotent)."""
        if self._owns_transport:
            await self._transport.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            # Closing before accepting rejects the handshake (HTTP 403); 1013 = try again later.
            await send({"type": "websocket.close", "code": 1013})
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_host = request_host(scope)
        host = normalize_host(raw_host)
        route = self._table.lookup(host)
        if route is None:
            await _send_error(send, 404, f"No instance is served at {host}.")
            return
        self._activity.request_started(host)
        if self._handoffs is not None and scope["path"] == HANDOFF_PATH:
            await self._handoff(scope, send, host)
        elif route.state is RouteState.UP and route.upstream is not None:
            await self._forward(scope, receive, send, route, route.upstream, raw_host, host)
        elif route.state is RouteState.ASLEEP and self._waker is not None:
            await self._wake_and_forward(scope, receive, send, route, raw_host, host)
        elif route.state is RouteState.ASLEEP:
            message = route.reason or f"Instance {_name(route)} is asleep."
            await _send_error(send, 503, message, ((b"retry-after", _ASLEEP_RETRY_AFTER),))
        else:
            await _send_error(send, 503, route.reason or f"Instance {_name(route)} is stopped.")

    async def _wake_and_forward(
        self, scope: Scope, receive: Receive, send: Send, route: Route, raw_host: str, host: str
    ) -> None:
        """Hold the request while its instance wakes, then forward it; one log line says how
        long the wake and the answer's first and last bytes took."""
        assert self._waker is not None
        asked = time.monotonic()
        try:
            upstream = await wake_within(self._waker, route, self._wake_timeout_s)
        except WakeFailed as failed:
            retry = (b"retry-after", b"%d" % failed.retry_after_s)
            await _send_error(send, 503, failed.message, (retry,))
            return
        woken = time.monotonic()
        first_byte = 0.0

        async def timed_send(message: Message) -> None:
            nonlocal first_byte
            if not first_byte and message["type"] == "http.response.start":
                first_byte = time.monotonic()
            await send(message)

        await self._forward(scope, receive, timed_send, route, upstream, raw_host, host)
        done = time.monotonic()
        log.info(
            "woken request %s: wake=%.2f first_byte=%.2f last_byte=%.2f ms",
            host,
            (woken - asked) * 1000,
            ((first_byte or done) - woken) * 1000,
            (done - (first_byte or done)) * 1000,
        )

    async def _handoff(self, scope: Scope, send: Send, host: str) -> None:
        assert self._handoffs is not None
        codes = parse_qs(scope["query_string"].decode("latin-1")).get("code", [])
        handoff = self._handoffs.redeem(host, codes[0]) if len(codes) == 1 else None
        nonce = secrets.token_urlsafe(16)
        body = handoff_page(handoff, nonce) if handoff is not None else EXPIRED_PAGE
        policy = f"default-src 'none'; script-src 'nonce-{nonce}'".encode()
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
            (b"cache-control", b"no-store"),
            (b"referrer-policy", b"no-referrer"),
            (b"content-security-policy", policy),
        ]
        status = 200 if handoff is not None else 410
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        route: Route,
        upstream: Upstream,
        raw_host: str,
        host: str,
    ) -> None:
        headers, has_body = _request_headers(scope, raw_host)
        client = _Client(receive)
        target: bytes = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
        query: bytes = scope["query_string"]
        if query:
            target += b"?" + query
        request = httpx.Request(
            scope["method"],
            _upstream_url(upstream),
            headers=headers,
            stream=client if has_body else _NO_BODY,
            extensions={"target": target, "timeout": _TIMEOUTS},
        )
        self._activity.forward_started(host)
        try:
            try:
                response = await self._send_upstream(request, host, upstream)
            except httpx.TransportError:
                await _send_error(send, 502, f"Instance {_name(route)} is not answering.")
                return
            try:
                await self._relay(response, send, client, host)
            finally:
                await response.aclose()
        except _ClientDisconnect:
            return
        except asyncio.CancelledError:
            if not client.absorb_departure():
                raise
        finally:
            client.finish()
            self._activity.forward_finished(host)

    async def _send_upstream(
        self, request: httpx.Request, host: str, upstream: Upstream
    ) -> httpx.Response:
        """The upstream's response; a refused connection is tried again (see the class)."""
        for pause in (*_REFUSED_RETRY_S, None):
            try:
                return await self._transport.handle_async_request(request)
            except httpx.ConnectError:
                route = self._table.lookup(host)
                still_up = (
                    route is not None
                    and route.state is RouteState.UP
                    and route.upstream == upstream
                )
                if pause is None or not still_up:
                    raise
                await asyncio.sleep(pause)
        raise AssertionError("unreachable")

    async def _relay(
        self, response: httpx.Response, send: Send, client: _Client, host: str
    ) -> None:
        """Send `response` to the client; the body chunk by chunk, each as soon as it arrives.

        The body is read from `response.stream` as the transport yields it: the raw bytes
        `aiter_raw()` would give (nothing decoded), without its per-chunk bookkeeping. With a
        known `Content-Length` the last chunk completes the response in the same message. If
        the upstream fails mid-body, a response of unknown length is ended (an event stream
        ends as when the instance stops), and a response of known length is left incomplete
        so that the server closes the connection: the client sees a truncated body, not a
        silently short one.
        """
        body = response.stream
        assert isinstance(body, httpx.AsyncByteStream)
        headers: list[tuple[bytes, bytes]] = []
        remaining = -1
        is_stream = False
        drop: frozenset[bytes] | None = None
        for raw_name, value in response.headers.raw:
            name = raw_name.lower()
            if name in _HOP_BY_HOP or name.startswith(b"proxy-"):
                if name == b"connection":
                    drop = _connection_options(value)
                continue
            if name == b"content-length":
                remaining = int(value)
            elif name == b"content-type":
                is_stream = value[:17].lower() == _SSE
            headers.append((name, value))
        if drop:
            headers = [header for header in headers if header[0] not in drop]
        await send(
            {"type": "http.response.start", "status": response.status_code, "headers": headers}
        )
        if is_stream:
            self._activity.stream_opened(host)
        if remaining < 0:
            client.watch()
        try:
            complete = False
            try:
                async for chunk in body:
                    remaining -= len(chunk)
                    complete = remaining == 0
                    if complete:
                        client.finish()
                    await send(
                        {"type": "http.response.body", "body": chunk, "more_body": not complete}
                    )
                    if not complete:
                        client.watch()
            except httpx.TransportError:
                if remaining >= 0:
                    return
            if not complete:
                client.finish()
                await send(_END)
        finally:
            if is_stream:
                self._activity.stream_closed(host)


class _ClientDisconnect(Exception):
    """The client left while its request body was being read."""


class _Client(httpx.AsyncByteStream):
    """The client side of one proxied request: its body, and the watch for its departure.

    Iterating yields the request body as the client sends it. `watch()`, called once a
    response body is being relayed that may take time (unknown length, or more to come),
    starts a task that reads the ASGI channel until `http.disconnect`; if that comes before
    `finish()`, the client has left: the task forwarding the request is cancelled (so that it
    closes the upstream response) and `absorb_departure()` then tells that task the
    cancellation was this one, to be swallowed rather than propagated. (A small response is
    relayed without a watch: a client gone by then costs one wasted upstream response.)
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._task = asyncio.current_task()
        self._watcher: asyncio.Task[None] | None = None
        self._done = False
        self._gone = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise _ClientDisconnect
            body: bytes = message.get("body", b"")
            if not message.get("more_body", False):
                if body:
                    yield body
                return
            if body:
                yield body

    def watch(self) -> None:
        """Start watching for the client's departure (idempotent)."""
        if self._watcher is None and not self._done:
            self._watcher = asyncio.create_task(self._watch())

    def finish(self) -> None:
        """The response is complete (or abandoned): stop watching."""
        self._done = True
        if self._watcher is not None:
            self._watcher.cancel()

    def absorb_departure(self) -> bool:
        """True if the current cancellation is the one `watch()` made because the client left."""
        return self._gone and self._task is not None and self._task.uncancel() == 0

    async def _watch(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        if not self._done and self._task is not None:
            self._gone = True
            self._task.cancel()


def _request_headers(scope: Scope, raw_host: str) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The headers to send upstream, and whether the request has a body to stream."""
    headers: list[tuple[bytes, bytes]] = []
    forwarded_for = b""
    chunked = False
    has_length = False
    drop: frozenset[bytes] | None = None
    for name, value in scope["headers"]:
        if name in _HOP_BY_HOP or name.startswith(b"proxy-"):
            if name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                drop = _connection_options(value)
            continue
        if name in _REPLACED:
            if name == b"x-forwarded-for":
                forwarded_for = value if not forwarded_for else forwarded_for + b", " + value
            continue
        if name == b"content-length":
            has_length = value != b"0"
        headers.append((name, value))
    if drop:
        headers = [header for header in headers if header[0] not in drop]
    if chunked:
        # This hop re-frames the body it streams; the client's own framing was dropped above.
        headers.append((b"transfer-encoding", b"chunked"))
    client = scope.get("client")
    if client:
        address = client[0].encode("latin-1")
        forwarded_for = forwarded_for + b", " + address if forwarded_for else address
    if forwarded_for:
        headers.append((b"x-forwarded-for", forwarded_for))
    headers.append((b"x-forwarded-proto", scope["scheme"].encode("latin-1")))
    headers.append((b"x-forwarded-host", raw_host.encode("latin-1")))
    return headers, chunked or has_length


def _connection_options(value: bytes) -> frozenset[bytes]:
    """The header names a `Connection` header lists, lowercased (`close`, ... included)."""
    return frozenset(token.strip().lower() for token in value.split(b","))


def _name(route: Route) -> str:
    """The instance's name, for messages: the first label of its host."""
    return route.host.partition(".")[0]


@lru_cache(maxsize=4096)
def _upstream_url(upstream: Upstream) -> httpx.URL:
    return httpx.URL(upstream.base_url)


async def _send_error(
    send: Send, status: int, message: str, extra_headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = orjson.dumps({"status": status, "message": message, "data": {}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
