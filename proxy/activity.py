"""Activity observed in the proxy layer: last request time and open streams, per host.

Nothing here reads tenant data; the control plane reads `snapshot()` to record "last request"
and to find idle instances (the idle sweep), and `in_flight()` to let requests drain before an
instance is hibernated, whatever engine an instance runs.

An engine that reports its own activity (the `pocketfleet` runtime, see
`control_plane.activity_reports`) adds `engine_reported`: its last request time and its open
streams count in `snapshot()` beside what the proxy saw (the larger of the two), so that a
stream the proxy layer cannot see (behind Caddy) still keeps an instance awake. A stream count
not confirmed within `ENGINE_REPORT_TTL_S` is let go (the engine repeats it while it holds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

ENGINE_REPORT_TTL_S = 30.0


@dataclass
class EngineReport:
    last_request_at: float
    open_streams: int
    received_at: float


@dataclass
class HostActivity:
    last_request_at: float = 0.0
    requests: int = 0
    open_streams: int = 0
    in_flight: int = 0  # requests being forwarded upstream now (open streams included)


class ActivityTracker:
    def __init__(self) -> None:
        self._hosts: dict[str, HostActivity] = {}
        self._engine: dict[str, EngineReport] = {}

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

    def engine_reported(self, host: str, last_request_at: float, open_streams: int) -> None:
        """What the host's engine said of itself (see the module docstring)."""
        self._engine[host] = EngineReport(last_request_at, max(0, open_streams), time.time())

    def snapshot(self) -> dict[str, HostActivity]:
        seen = {
            host: HostActivity(a.last_request_at, a.requests, a.open_streams, a.in_flight)
            for host, a in self._hosts.items()
        }
        now = time.time()
        for host, report in self._engine.items():
            activity = seen.setdefault(host, HostActivity())
            activity.last_request_at = max(activity.last_request_at, report.last_request_at)
            if now - report.received_at < ENGINE_REPORT_TTL_S:
                activity.open_streams = max(activity.open_streams, report.open_streams)
        return seen

    def forget(self, host: str) -> None:
        self._hosts.pop(host, None)
        self._engine.pop(host, None)
