"""Activity observed in the proxy layer: last request time and open streams, per host.

Nothing here reads tenant data; the control plane reads `snapshot()` to record "last request"
and to find idle instances (the idle sweep), and `in_flight()` to let requests drain before an
instance is hibernated, whatever engine an instance runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class HostActivity:
    last_request_at: float = 0.0
    requests: int = 0
    open_streams: int = 0
    in_flight: int = 0  # requests being forwarded upstream now (open streams included)


class ActivityTracker:
    def __init__(self) -> None:
        self._hosts: dict[str, HostActivity] = {}

    def _get(self, host: str) -> HostActivity:
        activity = self._hosts.get(host)
        if activity is None:
            activity = self._hosts[host] = HostActivity()
        return activity

    def request_started(self, host: str) -> None:
        activity = self._get(host)
        activity.last_request_at = time.time()
        activity.requests += 1

    def forward_started(self, host: str) -> None:
        """A request is being forwarded to the host's upstream (until `forward_finished`)."""
        self._get(host).in_flight += 1

    def forward_finished(self, host: str) -> None:
        activity = self._get(host)
        activity.in_flight = max(0, activity.in_flight - 1)

    def in_flight(self, host: str) -> int:
        """Requests forwarded to the host and not finished, not counting open event streams
        (which last as long as their client wants, so they never drain by themselves)."""
        activity = self._hosts.get(host)
        return 0 if activity is None else max(0, activity.in_flight - activity.open_streams)

    def stream_opened(self, host: str) -> None:
        self._get(host).open_streams += 1

    def stream_closed(self, host: str) -> None:
        activity = self._get(host)
        activity.open_streams = max(0, activity.open_streams - 1)
        activity.last_request_at = time.time()

    def snapshot(self) -> dict[str, HostActivity]:
        return {
            host: HostActivity(a.last_request_at, a.requests, a.open_streams, a.in_flight)
            for host, a in self._hosts.items()
        }

    def forget(self, host: str) -> None:
        self._hosts.pop(host, None)
