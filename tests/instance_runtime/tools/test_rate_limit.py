"""tools.rate_limit: PocketBase's rule lookup and fixed windows."""

from __future__ import annotations

from instance_runtime.tools.rate_limit import RateLimiters, find_rule

RULES = [
    {"label": "users:auth", "audience": "", "maxRequests": 1, "duration": 1},
    {"label": "*:auth", "audience": "@guest", "maxRequests": 2, "duration": 3},
    {"label": "/api/", "audience": "", "maxRequests": 300, "duration": 10},
    {"label": "POST /api/batch", "audience": "", "maxRequests": 3, "duration": 1},
]
GUEST = ("", "@guest")
AUTH = ("", "@auth")


def test_labels_are_tried_in_order_exact_before_prefix() -> None:
    assert find_rule(RULES, ["users:auth", "*:auth"], GUEST) is RULES[0]
    assert find_rule(RULES, ["posts:auth", "*:auth"], GUEST) is RULES[1]
    assert find_rule(RULES, ["POST /api/batch", "/api/batch"], GUEST) is RULES[3]


def test_audience_restricts_and_prefix_rules_match_the_first_label_only() -> None:
    assert find_rule(RULES, ["posts:auth", "*:auth"], AUTH) is None
    assert find_rule(RULES, ["/api/collections/x/records"], AUTH) is RULES[2]
    assert find_rule(RULES, ["GET /api/health", "/api/health"], AUTH) is RULES[2]
    assert find_rule(RULES, ["/health"], AUTH) is None


def test_a_window_allows_max_requests_then_reopens_after_its_duration() -> None:
    now = [1000.0]
    limiters = RateLimiters(clock=lambda: now[0])
    rule = {"maxRequests": 2, "duration": 3}
    assert [limiters.allow("r", rule, "1.1.1.1") for _ in range(3)] == [True, True, False]
    assert limiters.allow("r", rule, "2.2.2.2"), "clients have windows of their own"
    assert limiters.allow("other", rule, "1.1.1.1"), "so do limiters"
    now[0] += 3
    assert limiters.allow("r", rule, "1.1.1.1")


def test_clear_forgets_every_window_and_idle_clients_are_swept() -> None:
    now = [0.0]
    limiters = RateLimiters(forget_after=10, clock=lambda: now[0])
    rule = {"maxRequests": 1, "duration": 100}
    assert limiters.allow("r", rule, "a") and not limiters.allow("r", rule, "a")
    limiters.clear()
    assert limiters.allow("r", rule, "a")
    now[0] = 50.0
    limiters.allow("r", rule, "b")  # the sweep runs and forgets "a"
    assert limiters.allow("r", rule, "a")
