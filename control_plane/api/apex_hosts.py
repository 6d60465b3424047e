"""The apex (API and dashboard) answers only the host names it is configured for.

A web page on another site cannot read the API's answers, unless it makes its own name point
at this server (DNS rebinding): its requests then reach the API, but with its own name in
`Host`. Refusing every host that is not one of the apex's names closes that door.

The apex's names: `PF_DOMAIN`, `localhost`, the loopback addresses, the host of `PF_HTTP`,
and the names listed in `PF_APEX_HOSTS`; when `PF_HTTP` listens on every address (`0.0.0.0`,
`::`), any IP address too (an address in `Host` cannot be rebound: only a page served from
that very address sends it). Ports are not compared.

Instance hosts (`NAME.PF_DOMAIN`) never get here: `proxy.hostrouting.HostDispatcher` sends
them to the embedded proxy first. On any host, `/.well-known/pocketfleet/...` still reaches
the apex: the HTTP proof of a custom domain is answered on the domain itself
(`control_plane.domains.verification`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.api.errors import error_body
from control_plane.domains.verification import VERIFY_PATH
from control_plane.settings import Settings
from proxy.hostrouting import normalize_host, request_host

_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def apex_names(settings: Settings) -> frozenset[str]:
    """The host names (as `normalize_host` gives them) that the apex answers on."""
    listen = settings.host.strip()
    names = {settings.domain, *_LOOPBACK_NAMES, *settings.apex_hosts}
    if listen not in _WILDCARD_HOSTS:
        names.add(f"[{listen.strip('[]')}]" if ":" in listen else listen)
    return frozenset(normalize_host(name) for name in names if name)


def any_ip_address(settings: Settings) -> bool:
    """Whether PF_HTTP listens on every address (then every IP address is an apex name)."""
    return settings.host.strip() in _WILDCARD_HOSTS


class ApexHostMiddleware:
    """Pure ASGI, in front of the apex app: an HTTP request whose `Host` is not an apex name
    gets 421 Misdirected Request (a request without `Host` 400), as JSON in the API's error
    shape (`control_plane.api.errors`), and the app never sees it; a WebSocket handshake
    is refused. Lifespan events and `/.well-known/pocketfleet/...` pass on any host."""

    def __init__(
        self,
        app: ASGIApp,
        names: Iterable[str],
        *,
        any_ip: bool = False,
        open_prefixes: tuple[str, ...] = (VERIFY_PATH,),
    ) -> None:
        self.app = app
        self.names = frozenset(names)
        self.any_ip = any_ip
        self.open_prefixes = open_prefixes

    def allows(self, host: str) -> bool:
        name = normalize_host(host)
        return name in self.names or (self.any_ip and _is_ip(name))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"].startswith(
            self.open_prefixes
        ):
            await self.app(scope, receive, send)
            return
        raw = request_host(scope)
        if raw and self.allows(raw):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        if not raw:
            status, message = 400, "the request has no Host header"
        else:
            status = 421
            message = (
                f"this server does not answer for the host {normalize_host(raw)[:100]}: its "
                "API and dashboard are served on its own names only (an operator adds names "
                "with PF_APEX_HOSTS)"
            )
        body = error_body(status, message)
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
