"""The HTTP client of Python hooks: httpx, refusing this machine and private networks.

Contract: `safe_client(timeout=..., headers=...)` returns a new `httpx.AsyncClient` (use it as
`async with app.http() as client:`) whose every connection, redirects included, goes through
`tools.oauth2.safe_http.SafeTransport`: the host is resolved by the transport itself and only
a public address is connected to (not loopback, unspecified, RFC 1918 / fc00::/7 private,
link-local or multicast; no DNS rebinding, no unix sockets). Environment proxies are ignored;
up to 10 redirects are followed. A refused address fails the request with `httpx.ConnectError`
(and never reaches the network).

The operator (never a tenant: the variable is set in the instance's environment by whoever
starts it) may open some private networks to hooks with `PF_HOOKS_HTTP_ALLOW`, a comma
separated list of networks (`10.1.2.0/24,127.0.0.1/32`); tests use it to reach their own
loopback servers. `allowed_networks()` parses it (a malformed entry is logged and ignored).
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping

import httpx

from instance_runtime.tools.oauth2.safe_http import (
    MAX_REDIRECTS,
    IPAddress,
    SafeTransport,
    is_public_address,
)

ALLOW_ENV = "PF_HOOKS_HTTP_ALLOW"
DEFAULT_TIMEOUT = 30.0

log = logging.getLogger("instance_runtime.hooks")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def allowed_networks() -> list[Network]:
    """See the module docstring."""
    out: list[Network] = []
    for item in os.environ.get(ALLOW_ENV, "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            log.warning("%s: ignoring %r (not a network)", ALLOW_ENV, item)
    return out


def safe_client(
    *, timeout: float = DEFAULT_TIMEOUT, headers: Mapping[str, str] | None = None
) -> httpx.AsyncClient:
    """See the module docstring."""
    extra = allowed_networks()

    def allowed(address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if is_public_address(address):
            return True
        return any(address.version == net.version and address in net for net in extra)

    return httpx.AsyncClient(
        transport=SafeTransport(address_allowed=allowed),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        timeout=timeout,
        headers=dict(headers or {}),
        trust_env=False,
    )
