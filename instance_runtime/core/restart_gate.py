"""A gate for the app's HTTP requests, closed while the app restarts in place (a restore).

Contract: every request passes `await gate.enter()` ... `gate.leave()` (the ASGI layer of
`apis.backups` does it). `async with gate.closed(timeout, before_drain)`: new requests wait at
`enter` until the block ends; `before_drain` callbacks run first (they end long-lived streams,
e.g. realtime), then the block waits for the requests already in to leave, at most `timeout`
seconds (a slow download is left running), and only then runs its body. The gate opens again
when the block ends, however it ends. While open, `enter` costs one counter increment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

log = logging.getLogger("instance_runtime")


class RestartGate:
    """See the module docstring."""

    def __init__(self) -> None:
        self._running = 0
        self._open = asyncio.Event()
        self._open.set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def is_open(self) -> bool:
        return self._open.is_set()

    @property
    def running(self) -> int:
        return self._running

    async def enter(self) -> None:
        while not self._open.is_set():
            await self._open.wait()
        self._running += 1
        self._idle.clear()

    def leave(self) -> None:
        self._running -= 1
        if self._running <= 0:
            self._running = 0
            self._idle.set()

    @asynccontextmanager
    async def closed(
        self, timeout: float, before_drain: Iterable[Callable[[], None]] = ()
    ) -> AsyncIterator[None]:
        self._open.clear()
        try:
            for fn in before_drain:
                try:
                    fn()
                except Exception:
                    log.exception("a restart callback failed")
            if self._running:
                try:
                    await asyncio.wait_for(self._idle.wait(), timeout)
                except TimeoutError:
                    log.warning("restart: %d request(s) still running, going on", self._running)
            yield
        finally:
            self._open.set()
