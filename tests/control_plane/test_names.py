"""Instance names are DNS labels that become NAME.domain."""

from __future__ import annotations

import pytest

from control_plane.names import name_problem


@pytest.mark.parametrize("name", ["abc", "my-app", "a1b2", "x" * 40, "0day"])
def test_valid_names(name: str) -> None:
    assert name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("ab", "3 to 40"),
        ("x" * 41, "3 to 40"),
        ("-abc", "lowercase"),
        ("abc-", "lowercase"),
        ("Abc", "lowercase"),
        ("a.b", "lowercase"),
        ("a_b", "lowercase"),
        ("xn--abc", "punycode"),
        ("www", "reserved"),
        ("admin", "reserved"),
        ("dashboard", "reserved"),
    ],
)
def test_invalid_names_say_why(name: str, problem: str) -> None:
    reason = name_problem(name)
    assert reason is not None and problem in reason
