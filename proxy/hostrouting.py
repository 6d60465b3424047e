"""Host names of requests, and dispatch of requests by host: apex app or instance proxy.

`pocketfleet serve` answers on one port for everything: `localhost:8090` (the apex: API and
dashboard) and `NAME.localhost:8090` (instance NAME, through the embedded proxy). The
`HostDispatcher` makes that split in front of both apps, in the spirit of Starlette's
`routing.Host`, at the cost of one suffix check and one label match per request.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalize_host(value: str) -> str:
    """Return the host name of a `Host` header value: port removed, lowercased, no final dot.

    `App1.Localhost:8090` -> `app1.localhost`; `[::1]:8090` -> `[::1]`; `` -> ``.
    """
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1].lower() if end != -1 else value.lower()
    return value.partition(":")[0].rstrip(".").lower()


def request_host(scope: Scope) -> str:
    """The raw `Host` header of an HTTP or WebSocket scope (latin-1), or `` if it has none."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for name, value in headers:
        if name == b"host":
            return value.decode("latin-1")
    return ""


def instance_name_for_host(host: str, domain: str) -> str | None:
    """The instance name a host addresses under `domain`, or None if it addresses none.

    A host addresses an instance when, once normalized (see `normalize_host`), it is exactly
    one DNS label under `domain`: `myapp.localhost:8090` under `localhost` -> `myapp`. The
    apex (`localhost`), deeper names (`a.b.localhost`), IP addresses, other domains and labels
    that are not valid DNS labels (`my_app`, `-app`) address none.
    """
    name = normalize_host(host)
    suffix = "." + normalize_host(domain)
    if not name.endswith(suffix):
        return None
    label = name[: -len(suffix)]
    return label if _DNS_LABEL.fullmatch(label) else None


class HostDispatcher:
    """ASGI app that sends instance hosts to `instances` and everything else to `apex`.

    Contract: HTTP and WebSocket scopes whose `Host` addresses an instance under `domain`
    (see `instance_name_for_host`) are passed unchanged to `instances`; every other scope,
    including requests without a `Host` header, for IP addresses or the apex itself, goes to
    `apex`. Lifespan events go to `apex` only: the app serving `instances` is started and
    closed by the apex's lifespan.
    """

    def __init__(self, apex: ASGIApp, instances: ASGIApp, domain: str) -> None:
        self._apex = apex
        self._instances = instances
        self._domain = normalize_host(domain)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan" and (
            instance_name_for_host(request_host(scope), self._domain) is not None
        ):
            await self._instances(scope, receive, send)
        else:
            await self._apex(scope, receive, send)
