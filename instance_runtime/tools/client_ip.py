"""The client's address as PocketBase finds it (`RequestEvent.RealIP`), and IP allow-lists.

Contract (pure):

- `real_ip(remote, header_values, headers_to_trust, use_leftmost)`: for the first trusted header
  present (its last occurrence), the rightmost valid IP of its comma-separated list (the leftmost
  with `use_leftmost`), IPv6 written out in full as Go's `StringExpanded`; else `remote`.
- `ip_in_list(items, ip)`: whether `ip` is one of the addresses or inside one of the CIDR
  subnets of `items` (invalid items are skipped; an empty list or address is False).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence


def _expanded(text: str) -> str | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    return addr.exploded if addr.version == 6 else str(addr)


def real_ip(
    remote: str,
    header_values: Callable[[str], list[str]],
    headers_to_trust: Sequence[str],
    use_leftmost: bool,
) -> str:
    """See the module docstring."""
    for name in headers_to_trust:
        values = header_values(name)
        if not values or not values[-1]:
            continue
        ips = values[-1].split(",")
        for item in ips if use_leftmost else reversed(ips):
            found = _expanded(item)
            if found is not None:
                return found
    return remote


def ip_in_list(items: Sequence[str], ip: str) -> bool:
    """See the module docstring."""
    if not items or not ip:
        return False
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    for item in items:
        try:
            if "/" in item:
                if addr in ipaddress.ip_network(item, strict=False):
                    return True
            elif addr == ipaddress.ip_address(item):
                return True
        except ValueError:
            continue
    return False
