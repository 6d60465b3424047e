"""Request activity behind Caddy, fed into the `ActivityTracker` the embedded proxy feeds.

With Caddy in front, requests go straight from Caddy to the instances; Python sees none of
them. Two signals stand in for what the embedded proxy observes itself:

- Caddy's access log (one JSON datagram per finished request, over UDP on loopback, see
  `proxy.caddy.config`): each entry counts as a request of its host (`request_started`:
  last-request time and request count). UDP on purpose: a slow control plane loses log
  entries, it never slows Caddy down.
- Requests in flight per upstream (`GET /reverse_proxy/upstreams`, polled every `poll_s`):
  reported as in flight for the upstream's host, so that a long request or an open event
  stream keeps an instance from being found idle. When a route stops being `UP` (an
  instance going to sleep), `drain(host, upstream)` reads the count at once (Caddy keeps
  counting, see `config.instance_route`'s `draining`) and then every few milliseconds until
  it reaches 0 or `drain_timeout_s` passes, so the hibernator's drain sees the real number.

Counts are reported as deltas through `forward_started`/`forward_finished`, so they add to
whatever the embedded proxy forwards itself (a wake's held requests). Caddy cannot tell an
event stream from a slow request: both count as in flight.

Known limit (Caddy 2.6.2): after some config reloads, `/reverse_proxy/upstreams` reports 0
for requests that are in flight (the counter it shows is not the one the live handler
increments), so a long request or stream through Caddy may go unseen until it ends and is
logged. The idle sweep then relies on the last request time alone; a client whose stream is
cut by a hibernation reconnects and wakes the instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson

from proxy.activity import ActivityTracker
from proxy.caddy.admin import CaddyAdmin, CaddyError
from proxy.hostrouting import normalize_host
from proxy.routes import Upstream

log = logging.getLogger(__name__)

_DRAIN_POLL_S = 0.01


class HostMap(Protocol):
    """How Caddy's names map to instance hosts (`CaddyRoutes` is one)."""

    def canonical_host(self, host: str) -> str | None: ...

    def upstream_hosts(self) -> dict[str, str]: ...


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, handle: Callable[[bytes], None]) -> None:
        self._handle = handle

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._handle(data)


class CaddyActivity:
    """See the module docstring. `start()` binds the log socket and starts polling."""

    def __init__(
        self,
        tracker: ActivityTracker,
        admin: CaddyAdmin,
        hosts: HostMap,
        *,
        poll_s: float = 2.0,
        drain_timeout_s: float = 10.0,
    ) -> None:
        self.tracker = tracker
        self.admin = admin
        self.hosts = hosts
        self.poll_s = poll_s
        self.drain_timeout_s = drain_timeout_s
        self.on_drained: Callable[[str, Upstream], Awaitable[None]] | None = None
        self.entries = 0  # access-log entries received
        self._reported: dict[str, int] = {}
        self._draining: dict[str, asyncio.Task[None]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._poller: asyncio.Task[None] | None = None

    async def start(self, bind: str = "127.0.0.1:0") -> str:
        """Listen for access-log datagrams on `bind` (HOST:PORT) and start polling; returns
        the address to give Caddy (`udp/HOST:PORT`)."""
        host, _, port = bind.rpartition(":")
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self.record), local_addr=(host.strip("[]"), int(port))
        )
        self._transport = transport
        bound = transport.get_extra_info("sockname")
        self._poller = asyncio.create_task(self._poll(), name="caddy-activity")
        return f"udp/{bound[0]}:{bound[1]}"

    async def aclose(self) -> None:
        tasks = [t for t in (self._poller, *self._draining.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._transport is not None:
            self._transport.close()

    def record(self, data: bytes) -> None:
        """One access-log datagram (one or more JSON lines)."""
        for line in data.splitlines():
            try:
                entry = orjson.loads(line)
                raw = entry["request"]["host"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                continue
            host = self.hosts.canonical_host(normalize_host(str(raw)))
            if host is not None:
                self.entries += 1
                self.tracker.request_started(host)

    def _report(self, host: str, count: int) -> None:
        """Make `count` the number of Caddy's requests in flight to `host`."""
        before = self._reported.get(host, 0)
        for _ in range(count - before):
            self.tracker.forward_started(host)
        for _ in range(before - count):
            self.tracker.forward_finished(host)
        if count:
            self._reported[host] = count
        else:
            self._reported.pop(host, None)

    async def poll_once(self) -> None:
        """Read the in-flight counts of every routed upstream and report them."""
        counts = await self.admin.upstreams()
        seen: set[str] = set()
        for dial, host in self.hosts.upstream_hosts().items():
            if host not in self._draining:
                self._report(host, counts.get(dial, 0))
                seen.add(host)
        for host in list(self._reported):
            if host not in seen and host not in self._draining:
                self._report(host, 0)

    async def refresh(self) -> None:
        """Read the in-flight counts now (before deciding who is idle); never raises."""
        with contextlib.suppress(CaddyError):
            await self.poll_once()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            with contextlib.suppress(CaddyError):
                await self.poll_once()

    async def drain(self, host: str, upstream: Upstream) -> None:
        """`host` stopped being routed to `upstream`: report its requests still in flight
        now, and keep them up to date until they are done (in the background)."""
        dial = f"{upstream.host}:{upstream.port}"
        try:
            count = (await self.admin.upstreams()).get(dial, 0)
        except CaddyError:
            count = 0
        self._report(host, count)
        previous = self._draining.pop(host, None)
        if previous is not None:
            previous.cancel()
        self._draining[host] = asyncio.create_task(self._follow(host, dial, upstream, count))

    async def _follow(self, host: str, dial: str, upstream: Upstream, count: int) -> None:
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + self.drain_timeout_s
            while count and loop.time() < deadline:
                await asyncio.sleep(_DRAIN_POLL_S)
                with contextlib.suppress(CaddyError):
                    count = (await self.admin.upstreams()).get(dial, 0)
                    self._report(host, count)
            self._report(host, 0)
        finally:
            if self._draining.get(host) is asyncio.current_task():
                del self._draining[host]
        if self.on_drained is not None:
            await self.on_drained(host, upstream)
