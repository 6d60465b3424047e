"""Passwords, bearer tokens and the login throttle."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections import deque
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()

TOKEN_PREFIX = "pf_"


def hash_password(password: str) -> str:
    return _hasher.hash(password)


@cache
def _dummy_hash() -> str:
    """Verifying against this keeps a login for an unknown email as slow as for a known one."""
    return _hasher.hash("pocketfleet-dummy-password")


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return (
            _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class FailureThrottle:
    """Counts failures per key in a sliding window; a key over its limit is refused.

    In memory on purpose: it protects against guessing, and a restart forgetting counts does not
    weaken that meaningfully.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window_s:
            failures.popleft()
        return failures

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 when it may now."""
        now = time.monotonic()
        failures = self._recent(key, now)
        if len(failures) < self.limit:
            return 0
        return max(1, int(failures[0] + self.window_s - now) + 1)

    def fail(self, key: str) -> None:
        now = time.monotonic()
        self._recent(key, now).append(now)
        if len(self._failures) > 100_000:  # bound memory under a spray of distinct keys
            self._failures = {k: v for k, v in self._failures.items() if self._recent(k, now)}

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)
