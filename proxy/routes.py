"""The route table: `host -> upstream | asleep | stopped`, and the sink interface it feeds.

The lifecycle (through the reconciler) is the only writer. The embedded proxy reads a
`RouteTable` in memory; the Caddy sink (later) pushes the same routes to Caddy's admin API.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class RouteState(StrEnum):
    UP = "up"
    ASLEEP = "asleep"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Upstream:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class Route:
    """Where requests for `host` go. An `UP` route always has an upstream (else ValueError);
    `reason`, if set, is the message clients get while the route is not up."""

    host: str
    instance_id: str
    state: RouteState
    upstream: Upstream | None = None
    reason: str = ""

    def __post_init__(self) -> None:
        if self.state is RouteState.UP and self.upstream is None:
            raise ValueError(f"route {self.host} is up but has no upstream")


class RouteSink(Protocol):
    """Receives route changes. Contract: `set` and `remove` are idempotent and incremental;
    `replace_all` makes the sink hold exactly the given routes."""

    async def set(self, route: Route) -> None: ...

    async def remove(self, host: str) -> None: ...

    async def replace_all(self, routes: Iterable[Route]) -> None: ...


class RouteTable:
    """The in-memory table the embedded proxy serves; also a `RouteSink`."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}

    def lookup(self, host: str) -> Route | None:
        return self._routes.get(host.lower())

    def all(self) -> list[Route]:
        return list(self._routes.values())

    async def set(self, route: Route) -> None:
        self._routes[route.host.lower()] = route

    async def remove(self, host: str) -> None:
        self._routes.pop(host.lower(), None)

    async def replace_all(self, routes: Iterable[Route]) -> None:
        self._routes = {route.host.lower(): route for route in routes}
