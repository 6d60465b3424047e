"""`TeeSink`: one route table fed to several sinks (the embedded table and Caddy).

With Caddy in front, the embedded proxy still serves what Caddy sends to the control plane
(wakes of asleep hosts, sign-in hand-offs), so both must hold the same routes.
"""

from __future__ import annotations

from collections.abc import Iterable

from proxy.routes import Route, RouteSink


class TeeSink:
    """A `RouteSink` that applies every change to each of `sinks`, in order (the first one
    first: put the in-memory table there, it never fails)."""

    def __init__(self, *sinks: RouteSink) -> None:
        self.sinks = sinks

    async def set(self, route: Route) -> None:
        for sink in self.sinks:
            await sink.set(route)

    async def remove(self, host: str) -> None:
        for sink in self.sinks:
            await sink.remove(host)

    async def replace_all(self, routes: Iterable[Route]) -> None:
        routes = list(routes)
        for sink in self.sinks:
            await sink.replace_all(routes)
