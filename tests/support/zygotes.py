"""Waiting for a zygote of the process driver to accept connections.

Its socket file exists from `bind` on, before it listens: a request sent then is refused, so
tests wait for a connection to succeed, not for the file.
"""

from __future__ import annotations

import asyncio
import time

from control_plane.drivers.zygote import Zygotes


async def zygote_listening(zygotes: Zygotes, key: str, timeout: float = 60) -> None:
    """Wait until zygote `key` accepts connections; fail if it exits meanwhile (when it was
    already started) or after `timeout` seconds."""
    started = zygotes.running(key)
    deadline = time.monotonic() + timeout
    while True:
        assert not started or zygotes.running(key), f"zygote {key} exited"
        try:
            _, writer = await asyncio.open_unix_connection(str(zygotes.socket_path(key)))
            writer.close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"zygote {key} did not come up"
            await asyncio.sleep(0.1)
