"""PocketBase's rate limiter: rules found by label, a fixed window per client and limiter.

Contract (pure, no I/O; rules are PocketBase's `settings.rateLimits.rules` dicts):

- `find_rule(rules, labels, audiences)` returns the first rule matching one of `labels` in
  order (an exact label; for the first label also a rule whose label ends with `/` and
  prefixes it), restricted to rules whose `audience` is in `audiences`; else None.
- `RateLimiters.allow(limiter_id, rule, client)` takes one request from `client`'s window of
  limiter `limiter_id`: each window opens with `maxRequests` requests and lasts `duration`
  seconds from its first request (PocketBase's `rateClient.consume`). Clients idle for more
  than `forget_after` seconds are forgotten. `clear()` forgets everything (settings changed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

Rule = dict[str, Any]


def find_rule(
    rules: Sequence[Rule], labels: Sequence[str], audiences: Sequence[str]
) -> Rule | None:
    """See the module docstring."""
    prefix_rules: list[Rule] = []
    for index, label in enumerate(labels):
        for rule in rules:
            rule_label = str(rule.get("label", ""))
            if label == rule_label and str(rule.get("audience", "")) in audiences:
                return rule
            if index == 0 and rule_label.endswith("/"):
                prefix_rules.append(rule)
        for rule in prefix_rules:
            if (label + "/").startswith(str(rule.get("label", ""))) and str(
                rule.get("audience", "")
            ) in audiences:
                return rule
    return None


class _Window:
    __slots__ = ("available", "start")

    def __init__(self) -> None:
        self.available = 0
        self.start = float("-inf")


class RateLimiters:
    """See the module docstring."""

    def __init__(
        self, *, forget_after: float = 1800.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._limiters: dict[str, dict[str, _Window]] = {}
        self._lock = threading.Lock()
        self._forget_after = forget_after
        self._clock = clock
        self._next_sweep = clock() + forget_after

    def allow(self, limiter_id: str, rule: Rule, client: str) -> bool:
        max_requests = int(rule.get("maxRequests") or 0)
        duration = float(rule.get("duration") or 0)
        now = self._clock()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            windows = self._limiters.setdefault(limiter_id, {})
            window = windows.get(client)
            if window is None:
                window = windows[client] = _Window()
            if int(now) - window.start >= duration:
                window.available = max_requests
                window.start = int(now)
            if window.available > 0:
                window.available -= 1
                return True
            return False

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + self._forget_after
        for windows in self._limiters.values():
            for client in [c for c, w in windows.items() if now - w.start > self._forget_after]:
                del windows[client]

    def clear(self) -> None:
        with self._lock:
            self._limiters.clear()
