"""`CaddyRoutes`: the route table pushed to Caddy's admin API, one route per host by `@id`.

The sink keeps a mirror of the routes it was given (the desired state, itself derived from
the control DB by the reconciler) and makes Caddy hold exactly that:

- `set(route)`: one `PATCH /id/pocketfleet-host-HOST` (or, for a new host, one append to the
  instance list, guarded by `If-Match` so that concurrent writers never add a host twice);
  other routes are untouched. A route that stops being `UP` (asleep, stopped) is in force in
  Caddy when `set` returns, so that requests drain before the instance stops; a route that
  becomes `UP` is pushed in the background: until it lands, Caddy still sends the host to
  the control plane, whose embedded proxy already forwards it (a wake's held request does
  not wait for Caddy's reload).
- `remove(host)`: `DELETE /id/...` (absent: nothing to do).
- `replace_all(routes)`: pocketfleet's whole part of the config in one `POST /config/` with
  `If-Match` (re-read and retried on 412), under a fresh epoch (see `proxy.caddy.config`).
- A watcher asks Caddy's HTTP listener every `check_interval_s` for the epoch of the last
  full push (`config.EPOCH_PATH`); when Caddy restarted (or lost the config, or missed a
  change while it was down) the mirror is pushed again in full: every route is back within
  about one interval of Caddy answering again.

Failures never raise out of the `RouteSink` methods (the reconcile loop must go on): Caddy
being down marks the mirror dirty and the watcher restores it. `set_aliases(host, domains)`
adds verified custom domains to a host's route (`load_aliases` sets them all before the first
full push).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping

import httpx

from proxy.caddy.admin import CaddyAdmin, CaddyError, CaddyRefused, CaddyUnavailable, Conflict
from proxy.caddy.config import (
    EPOCH_PATH,
    INSTANCES_PATH,
    PROBE_HOST,
    CaddyLayout,
    Json,
    apply,
    host_id,
    instance_route,
    local_dial,
)
from proxy.routes import Route, RouteState, Upstream

log = logging.getLogger(__name__)

_ATTEMPTS = 5

DrainHook = Callable[[str, Upstream], Awaitable[None]]


class CaddyRoutes:
    """A `RouteSink` for Caddy; see the module docstring for the contract."""

    def __init__(
        self, admin: CaddyAdmin, layout: CaddyLayout, *, check_interval_s: float = 0.5
    ) -> None:
        self.admin = admin
        self.layout = layout
        self.check_interval_s = check_interval_s
        self.on_drain: DrainHook | None = None
        self._routes: dict[str, Route] = {}
        self._aliases: dict[str, tuple[str, ...]] = {}
        self._alias_owner: dict[str, str] = {}
        self._draining: dict[str, Upstream] = {}
        self._lock = asyncio.Lock()
        self._epoch = ""
        self._dirty = True
        self._seeded = False  # replace_all has been called: the mirror is the whole table
        self._pending: set[str] = set()
        self._kick = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._probe_client = httpx.AsyncClient(timeout=2.0, trust_env=False)
        self.restores = 0  # full pushes made because Caddy had lost the config

    # ----- lifecycle

    def start(self) -> None:
        """Start the watcher and the background pusher (on the running loop)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._watch(), name="caddy-watch"),
                asyncio.create_task(self._push_pending(), name="caddy-push"),
            ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._probe_client.aclose()

    # ----- what the activity feed needs

    def canonical_host(self, host: str) -> str | None:
        """The instance host that `host` (an instance host or a custom domain) belongs to."""
        host = host.lower()
        if host in self._routes:
            return host
        return self._alias_owner.get(host)

    def upstream_hosts(self) -> dict[str, str]:
        """Instance host by upstream dial address, for the hosts routed straight to one."""
        return {
            f"{r.upstream.host}:{r.upstream.port}": host
            for host, r in self._routes.items()
            if r.state is RouteState.UP and r.upstream is not None
        }

    # ----- RouteSink

    async def set(self, route: Route) -> None:
        host = route.host.lower()
        drain: Upstream | None = None
        async with self._lock:
            previous = self._routes.get(host)
            self._routes[host] = route
            if (
                route.state is RouteState.ASLEEP
                and previous is not None
                and previous.state is RouteState.UP
                and previous.upstream is not None
            ):
                drain = self._draining[host] = previous.upstream
            elif route.state is not RouteState.ASLEEP:
                self._draining.pop(host, None)
            if route.state is RouteState.UP:
                self._pending.add(host)
                self._kick.set()
            else:
                self._pending.discard(host)
                await self._push_host(host)
        if drain is not None and self.on_drain is not None:
            await self.on_drain(host, drain)

    async def remove(self, host: str) -> None:
        host = host.lower()
        async with self._lock:
            self._routes.pop(host, None)
            self._draining.pop(host, None)
            self._pending.discard(host)
            for alias in self._aliases.pop(host, ()):
                self._alias_owner.pop(alias, None)
            if self._dirty:
                return  # the next full push leaves it out
            try:
                for _ in range(_ATTEMPTS):  # more than one only if someone else duplicated it
                    await self.admin.delete(f"/id/{host_id(host)}")
            except CaddyRefused as exc:
                if exc.status != 404:
                    self._failed(f"removing {host}", exc)
            except CaddyError as exc:
                self._failed(f"removing {host}", exc)

    async def replace_all(self, routes: Iterable[Route]) -> None:
        async with self._lock:
            self._routes = {route.host.lower(): route for route in routes}
            self._draining = {h: u for h, u in self._draining.items() if h in self._routes}
            self._pending.clear()
            self._seeded = True
            await self._push_all()

    # ----- custom domains

    def load_aliases(self, aliases: Mapping[str, Iterable[str]]) -> None:
        """Set every host's custom domains at once (before the first full push)."""
        self._aliases = {host.lower(): tuple(sorted(d)) for host, d in aliases.items() if d}
        self._alias_owner = {d: h for h, ds in self._aliases.items() for d in ds}

    async def set_aliases(self, host: str, domains: Iterable[str]) -> None:
        """Serve `domains` (verified custom domains) like `host`, now; an empty list removes
        them. The change is in force in Caddy when this returns (unless Caddy is down: then
        it is in the next full push)."""
        host = host.lower()
        async with self._lock:
            for alias in self._aliases.pop(host, ()):
                self._alias_owner.pop(alias, None)
            current = tuple(sorted({d.lower() for d in domains}))
            if current:
                self._aliases[host] = current
                self._alias_owner.update(dict.fromkeys(current, host))
            if host in self._routes:
                self._pending.discard(host)
                await self._push_host(host)

    # ----- pushing

    async def resync(self) -> None:
        """Push the whole mirror now, unless Caddy already holds it (after a restart)."""
        async with self._lock:
            if self._dirty or not await self.holds_epoch():
                await self._push_all()

    def startup_config(self, base: Json) -> Json:
        """`base` (a Caddy config to start with) with every route of the mirror, under a new
        epoch: for a Caddy about to start, which then needs no push."""
        if not self._seeded:
            return base
        epoch = secrets.token_hex(6)
        routes = [self._route_json(host) for host in sorted(self._routes)]
        config = apply(base, self.layout, routes, epoch)
        self._epoch, self._dirty = epoch, False
        return config

    def _failed(self, what: str, exc: Exception) -> None:
        self._dirty = True
        log.warning(
            "caddy: %s failed (%s); the full config is pushed again when it answers", what, exc
        )

    def _route_json(self, host: str) -> dict[str, object]:
        return instance_route(
            self._routes[host],
            self.layout,
            self._aliases.get(host, ()),
            self._draining.get(host),
        )

    async def _push_host(self, host: str) -> None:
        """Make Caddy's route of `host` match the mirror (lock held)."""
        if not self._seeded:
            return  # the first `replace_all` pushes every route
        if self._dirty:
            await self._push_all()
            return
        if host not in self._routes:
            return
        body = self._route_json(host)
        try:
            try:
                await self.admin.patch(f"/id/{host_id(host)}", body)
            except CaddyRefused as exc:
                if exc.status != 404:
                    raise
                await self._append(host, body)
        except CaddyError as exc:
            self._failed(f"routing {host}", exc)

    async def _append(self, host: str, body: dict[str, object]) -> None:
        """Add a host's route to the instance list, unless a concurrent writer did."""
        for _ in range(_ATTEMPTS):
            routes, etag = await self.admin.get(INSTANCES_PATH)
            if not isinstance(routes, list):
                raise CaddyError("Caddy holds no pocketfleet server")
            if any(r.get("@id") == host_id(host) for r in routes):
                await self.admin.patch(f"/id/{host_id(host)}", body)
                return
            try:
                await self.admin.post(INSTANCES_PATH, body, if_match=etag)
                return
            except Conflict:
                continue
        raise CaddyError(f"the instance list kept changing while adding {host}")

    async def _push_all(self) -> None:
        """Push pocketfleet's part of the config in full (lock held)."""
        epoch = secrets.token_hex(6)
        routes = [self._route_json(host) for host in sorted(self._routes)]
        try:
            for _ in range(_ATTEMPTS):
                config, etag = await self.admin.get("/config/")
                new = apply(config or {}, self.layout, routes, epoch)
                try:
                    await self.admin.post("/config/", new, if_match=etag)
                except Conflict:
                    continue
                self._epoch, self._dirty = epoch, False
                self._pending.clear()
                return
            raise CaddyError("the config kept changing during a full push")
        except CaddyError as exc:
            self._failed("pushing every route", exc)

    async def _push_pending(self) -> None:
        while True:
            await self._kick.wait()
            self._kick.clear()
            async with self._lock:
                for host in sorted(self._pending):
                    self._pending.discard(host)
                    await self._push_host(host)

    async def holds_epoch(self) -> bool:
        """Whether Caddy's HTTP listener answers the epoch of the last full push."""
        url = f"http://{local_dial(self.layout.http_listen)}{EPOCH_PATH}"
        for attempt in range(2):  # Caddy 2.6 may reset a connection while it swaps configs
            try:
                response = await self._probe_client.get(url, headers={"Host": PROBE_HOST})
            except httpx.TransportError:
                if attempt == 0:
                    await asyncio.sleep(0.05)
                    continue
                return False
            except httpx.HTTPError:
                return False
            return response.status_code == 200 and response.text == self._epoch
        return False

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval_s)
            if not self._seeded or (not self._dirty and await self.holds_epoch()):
                continue
            try:  # not as pushed last: is Caddy there at all?
                await self.admin.get("/config/admin")
            except CaddyUnavailable:
                self._dirty = True
                continue
            except CaddyError as exc:
                log.warning("caddy: checking the config failed: %s", exc)
                continue
            log.warning("caddy: restoring pocketfleet's config (Caddy restarted or lost it)")
            async with self._lock:
                await self._push_all()
            if not self._dirty:
                self.restores += 1

    async def drained(self, host: str, upstream: Upstream) -> None:
        """Requests to `upstream` have drained: drop the branch that kept Caddy counting them
        (if the host is still asleep on that upstream)."""
        async with self._lock:
            if self._draining.get(host) == upstream:
                del self._draining[host]
                await self._push_host(host)
