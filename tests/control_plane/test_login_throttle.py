"""The login throttle's rules, on the class itself (the API's use of it: tests/control_plane/
api/test_login_throttling.py)."""

from __future__ import annotations

import pytest

from control_plane.login_throttle import (
    ADDRESS_FACTOR,
    FIRST_DELAY_S,
    LoginThrottle,
    Throttled,
)

LIMIT = 5


def throttle(max_delay_s: float = 10.0) -> LoginThrottle:
    return LoginThrottle(LIMIT, window_s=300, max_delay_s=max_delay_s)


def fail(t: LoginThrottle, email: str, address: str, times: int = 1) -> None:
    for _ in range(times):
        t.reserve(email, address)  # never settled: a wrong password


def test_a_pair_is_refused_after_its_failures_but_not_the_owner_elsewhere() -> None:
    t = throttle()
    fail(t, "owner@example.com", "203.0.113.9", LIMIT)
    with pytest.raises(Throttled) as refused:
        t.reserve("owner@example.com", "203.0.113.9")
    assert refused.value.retry_after_s >= 1
    attempt = t.reserve("owner@example.com", "198.51.100.1")  # the owner, at home
    assert attempt.delay_s == 0
    attempt.succeeded()


def test_refused_attempts_are_not_counted() -> None:
    t = throttle()
    fail(t, "a@example.com", "203.0.113.9", LIMIT)
    for _ in range(50):
        with pytest.raises(Throttled):
            t.reserve("a@example.com", "203.0.113.9")
    # only LIMIT failures count for the email: still no delay for anyone else
    assert t.reserve("a@example.com", "198.51.100.1").delay_s == 0


def test_an_address_is_refused_after_failing_many_emails() -> None:
    t = throttle()
    for i in range(LIMIT * ADDRESS_FACTOR):
        t.reserve(f"user{i}@example.com", "203.0.113.9")
    with pytest.raises(Throttled):
        t.reserve("fresh@example.com", "203.0.113.9")
    t.reserve("fresh@example.com", "198.51.100.1")


def test_an_email_failing_from_many_addresses_is_slowed_never_refused() -> None:
    t = throttle(max_delay_s=4.0)
    for n in range(6):  # 6 addresses, each at its pair limit: 30 failures for one email
        fail(t, "target@example.com", f"203.0.113.{n}", LIMIT)
    attempt = t.reserve("target@example.com", "198.51.100.1")
    assert attempt.delay_s == 4.0  # grown to the cap, not a refusal
    attempt.succeeded()


def test_the_delay_grows_with_each_failure_past_the_limit() -> None:
    t = throttle(max_delay_s=10.0)
    delays = [t.delay_for(failures) for failures in range(LIMIT + 7)]
    assert delays[: LIMIT + 1] == [0.0] * (LIMIT + 1)
    assert delays[LIMIT + 1 :] == [FIRST_DELAY_S * 2**i for i in range(5)] + [10.0]


def test_concurrent_attempts_are_counted_before_their_password_is_checked() -> None:
    t = throttle()
    passed, refused = [], 0
    for _ in range(200):  # 200 attempts in flight at once: none has failed yet
        try:
            passed.append(t.reserve("a@example.com", "203.0.113.9"))
        except Throttled:
            refused += 1
    assert (len(passed), refused) == (LIMIT, 200 - LIMIT)


def test_a_success_takes_its_reservation_back_and_forgets_the_pair() -> None:
    t = throttle()
    fail(t, "a@example.com", "203.0.113.9", LIMIT - 1)
    t.reserve("a@example.com", "203.0.113.9").succeeded()
    fail(t, "a@example.com", "203.0.113.9", LIMIT)  # a fresh start for the pair
    with pytest.raises(Throttled):
        t.reserve("a@example.com", "203.0.113.9")


def test_an_abandoned_attempt_is_not_a_failure() -> None:
    t = throttle()
    for _ in range(LIMIT * 3):
        t.reserve("a@example.com", "203.0.113.9").abandoned()
    t.reserve("a@example.com", "203.0.113.9").succeeded()


def test_a_success_does_not_clear_its_address() -> None:
    # one's own account logged into now and then must not reset a spray from one address
    t = throttle()
    for i in range(LIMIT * ADDRESS_FACTOR - 1):
        t.reserve(f"user{i}@example.com", "203.0.113.9")
    t.reserve("mine@example.com", "203.0.113.9").succeeded()
    t.reserve("another@example.com", "203.0.113.9")
    with pytest.raises(Throttled):
        t.reserve("yet-another@example.com", "203.0.113.9")
