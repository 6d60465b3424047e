"""Picking the loopback port of a new instance."""

from __future__ import annotations

import socket
from collections.abc import Collection

from control_plane.settings import Settings


class NoFreePortError(Exception):
    """Every port of `settings.instance_port_range` is taken or in use."""


def port_is_bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether `host:port` can be bound right now (nothing else holds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(settings: Settings, taken: Collection[int]) -> int:
    """The lowest port of `settings.instance_port_range` (inclusive) that is not in `taken`
    (the ports of every known instance, running or not) and can be bound on 127.0.0.1 now.

    Raises `NoFreePortError` when there is none.
    """
    low, high = settings.instance_port_range
    for port in range(low, high + 1):
        if port not in taken and port_is_bindable(port):
            return port
    raise NoFreePortError(f"no free port in {low}-{high} ({len(taken)} taken by instances)")
