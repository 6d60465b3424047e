"""The login throttle: failed logins slow down guessing without letting anyone lock an owner out.

Failures are counted in a sliding window of `window_s` seconds, under three keys:

- **(email, address)**: after `max_failures` failures, that pair is refused (`Throttled`, 429)
  until its oldest failure leaves the window. The owner of the email, logging in from another
  address, is another pair: a hostile client failing logins for a chosen email does not lock
  its owner out.
- **address**: after `max_failures * ADDRESS_FACTOR` failures (over any emails), the address
  is refused: one client spraying many emails.
- **email alone**: never refused. Once an email has failed more than `max_failures` times
  (which takes more than one address), every further attempt for it waits before its password
  is checked: `FIRST_DELAY_S`, doubling with each failure, at most `max_delay_s`. Guessing one
  email from many addresses gets slower and slower; its owner still gets in, later.

`reserve()` counts an attempt as a failure *before* its password is checked (the check is
slow), so that concurrent attempts cannot all pass a limit that none of them has failed yet:
of 200 concurrent wrong logins for one pair, exactly `max_failures` are checked. A correct
password takes the reservation back (`LoginAttempt.succeeded`, which also forgets the pair's
failures); an attempt that ends before its password is checked (the client left, the database
failed) takes it back with `LoginAttempt.abandoned`.

In memory on purpose: it protects against guessing, and a restart forgetting counts does not
weaken that meaningfully. Memory is bounded: past `MAX_KEYS` keys in one window, keys without
recent failures are dropped, then the oldest ones.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

ADDRESS_FACTOR = 4  # one address may fail this many times more than one (email, address) pair
FIRST_DELAY_S = 0.5
MAX_KEYS = 100_000

K = TypeVar("K", bound=Hashable)


class Throttled(Exception):
    """Refused without checking the password; `retry_after_s` says when to try again."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many failed logins; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class _Window(Generic[K]):
    """Failure times per key, the last `window_s` seconds of them; each failure also names
    the address it came from (for the per-email window, where a success forgets only its own
    address's failures)."""

    def __init__(self, window_s: float) -> None:
        self.window_s = window_s
        self._failures: dict[K, deque[tuple[float, str]]] = {}

    def recent(self, key: K, now: float) -> deque[tuple[float, str]]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0][0] <= now - self.window_s:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, key: K, now: float) -> int:
        """Whole seconds (at least 1) until the oldest recent failure of `key` leaves."""
        oldest = self.recent(key, now)[0][0]
        return max(1, math.ceil(oldest + self.window_s - now))

    def add(self, key: K, at: float, address: str) -> None:
        self._failures.setdefault(key, deque()).append((at, address))
        if len(self._failures) > MAX_KEYS:
            self._shrink(at)

    def remove(self, key: K, at: float, address: str) -> None:
        failures = self._failures.get(key)
        if failures is not None and (at, address) in failures:
            failures.remove((at, address))

    def forget(self, key: K, address: str | None = None) -> None:
        """Every failure of `key` (only those from `address`, when given)."""
        if address is None:
            self._failures.pop(key, None)
            return
        failures = self._failures.get(key)
        if failures is not None:
            self._failures[key] = deque(f for f in failures if f[1] != address)

    def _shrink(self, now: float) -> None:
        for key in list(self._failures):
            self.recent(key, now)
        excess = len(self._failures) - MAX_KEYS // 2
        if len(self._failures) > MAX_KEYS and excess > 0:  # a spray of live keys
            for key in list(self._failures)[:excess]:  # insertion order: the oldest first
                del self._failures[key]


@dataclass(eq=False)
class LoginAttempt:
    """One reserved attempt: it counts as a failure unless `succeeded()` or `abandoned()` is
    called. `delay_s` is how long it must wait before its password is checked."""

    email: str
    address: str
    at: float
    delay_s: float
    _throttle: LoginThrottle = field(repr=False)
    _settled: bool = field(default=False, repr=False)

    def succeeded(self) -> None:
        """The password was right: take the reservation back and forget the pair's failures."""
        if not self._settled:
            self._settled = True
            self._throttle._release(self, forget_pair=True)

    def abandoned(self) -> None:
        """The password was never checked: take the reservation back."""
        if not self._settled:
            self._settled = True
            self._throttle._release(self, forget_pair=False)


class LoginThrottle:
    """See the module docstring for the contract."""

    def __init__(self, max_failures: int, window_s: float, max_delay_s: float) -> None:
        self.max_failures = max_failures
        self.max_address_failures = max_failures * ADDRESS_FACTOR
        self.max_delay_s = max_delay_s
        self._pairs: _Window[tuple[str, str]] = _Window(window_s)
        self._addresses: _Window[str] = _Window(window_s)
        self._emails: _Window[str] = _Window(window_s)

    def reserve(self, email: str, address: str) -> LoginAttempt:
        """Count an attempt for `email` from `address` now; raises `Throttled` when its pair
        or its address is over its limit (nothing is counted then)."""
        now = time.monotonic()
        pair = (email, address)
        if len(self._pairs.recent(pair, now)) >= self.max_failures:
            raise Throttled(self._pairs.retry_after(pair, now))
        if len(self._addresses.recent(address, now)) >= self.max_address_failures:
            raise Throttled(self._addresses.retry_after(address, now))
        delay = self.delay_for(len(self._emails.recent(email, now)))
        self._pairs.add(pair, now, address)
        self._addresses.add(address, now, address)
        self._emails.add(email, now, address)
        return LoginAttempt(email, address, now, delay, self)

    def delay_for(self, email_failures: int) -> float:
        """The wait of an attempt for an email with `email_failures` recent failures."""
        over = email_failures - self.max_failures
        if over <= 0:
            return 0.0
        return min(self.max_delay_s, FIRST_DELAY_S * 2.0 ** min(over - 1, 64))

    def _release(self, attempt: LoginAttempt, *, forget_pair: bool) -> None:
        pair = (attempt.email, attempt.address)
        self._pairs.remove(pair, attempt.at, attempt.address)
        self._addresses.remove(attempt.address, attempt.at, attempt.address)
        self._emails.remove(attempt.email, attempt.at, attempt.address)
        if forget_pair:
            self._pairs.forget(pair)
            self._emails.forget(attempt.email, attempt.address)
