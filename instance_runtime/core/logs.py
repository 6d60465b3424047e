"""The app's log of requests (what PocketBase keeps in `auxiliary.db`'s `_logs`).

Contract: `RequestLog.add(entry)` keeps one request's entry (PocketBase's log shape:
`{"message", "level", "data": {type, url, method, status, execTime, auth, ...}}`) and hands it
to the `instance_runtime.requests` logger at debug level; `recent(n)` returns the newest `n`,
newest first. It holds the last `capacity` entries in memory; nothing else is promised yet
(persisting them and `GET /api/logs` are the logs issue's).
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

log = logging.getLogger("instance_runtime.requests")

INFO = 0
ERROR = 8  # PocketBase's (slog's) levels


class RequestLog:
    """See the module docstring."""

    def __init__(self, capacity: int = 1000) -> None:
        self._entries: deque[dict[str, Any]] = deque(maxlen=capacity)

    def add(self, entry: dict[str, Any]) -> None:
        self._entries.append(entry)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", entry["message"], entry["data"])

    def recent(self, n: int = 100) -> list[dict[str, Any]]:
        items = list(self._entries)[-n:]
        items.reverse()
        return items
