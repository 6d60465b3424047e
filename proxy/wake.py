"""Wake on request: the seam between the proxy, which holds requests for asleep hosts, and
whatever can start the instance behind them (the control plane implements `Waker`).

The proxy knows routes and upstreams only; it never imports the control plane. A request for
an `ASLEEP` route is held while `Waker.wake` runs, then forwarded to the upstream it returns —
or answered 503 with `Retry-After` when the wake fails or passes its deadline.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from proxy.routes import Route, Upstream

# Seconds a client is told to wait when a wake passed the proxy's deadline (the wake goes on).
DEADLINE_RETRY_AFTER_S = 1


class WakeFailed(Exception):
    """The instance could not be woken now. `message` is for the client; `retry_after_s` is
    what its `Retry-After` header says."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = max(1, retry_after_s)


class Waker(Protocol):
    """Starts the instance behind an asleep route.

    Contract of `wake(route)`: returns the upstream to forward to once the instance is healthy
    (and its route is `UP`). Concurrent calls for one instance join one wake (one start).
    Cancelling a call (a client leaving, a deadline) does not cancel the wake: later callers
    join it or find the instance up. A global limit bounds how many instances start at once.
    Raises `WakeFailed` when the instance cannot be started (failing engine, back-off after
    earlier failures, or not hibernated any more).
    """

    async def wake(self, route: Route) -> Upstream: ...


async def wake_within(waker: Waker, route: Route, timeout_s: float) -> Upstream:
    """`waker.wake(route)`, or `WakeFailed` (retry after 1 s) after `timeout_s` seconds."""
    try:
        async with asyncio.timeout(timeout_s):
            return await waker.wake(route)
    except TimeoutError:
        name = route.host.partition(".")[0]
        raise WakeFailed(
            f"Instance {name} is waking up and took longer than {timeout_s:g} s; retry shortly.",
            DEADLINE_RETRY_AFTER_S,
        ) from None
