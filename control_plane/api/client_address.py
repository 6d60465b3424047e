"""The real client address of an API or dashboard request, for the login throttle.

A request's peer is the client itself, unless it is a trusted proxy (`PF_TRUSTED_PROXIES`):
then the client is the right-most address of `X-Forwarded-For` that is not a trusted proxy
(each proxy appends the address it was reached from, so everything left of the first hop that
no trusted proxy wrote may be forged by the client). A header from any other peer is ignored.

Which proxies are trusted, unless `PF_TRUSTED_PROXIES` says otherwise: with `PF_PROXY=caddy`,
loopback, because Caddy reaches the control plane at PF_HTTP on loopback
(`control_plane.caddy_frontend.control_plane_dial`) and sets `X-Forwarded-For` to the address
its client came from; with the embedded proxy, none, because clients reach PF_HTTP directly
(the embedded proxy forwards instance hosts to instances, never to the API). An operator who
puts another proxy in front of PF_HTTP names it in `PF_TRUSTED_PROXIES`.

The work is done by uvicorn's `ProxyHeadersMiddleware` (which also takes the scheme from a
trusted proxy's `X-Forwarded-Proto`), in front of the apex app only: the embedded proxy
still sees, and appends to `X-Forwarded-For`, the peer it was reached from.
"""

from __future__ import annotations

from starlette.types import ASGIApp
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from control_plane.settings import Settings

LOOPBACK = ("127.0.0.0/8", "::1/128", "::ffff:127.0.0.0/104")


def trusted_proxies(settings: Settings) -> list[str]:
    """The networks whose `X-Forwarded-For` is believed (see the module docstring)."""
    if settings.trusted_proxies is not None:
        return [str(network) for network in settings.trusted_proxies]
    return list(LOOPBACK) if settings.proxy == "caddy" else []


class ClientAddressMiddleware(ProxyHeadersMiddleware):
    """Pure ASGI: `scope["client"]` (`request.client`) becomes the real client address."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app, trusted_hosts=trusted_proxies(settings))  # type: ignore[arg-type]
