"""The rules of tenants' environment variables (`control_plane.env_rules`), as pure functions."""

from __future__ import annotations

import pytest

from control_plane.env_rules import (
    MAX_NAME_LENGTH,
    MAX_TOTAL_BYTES,
    MAX_VALUE_BYTES,
    MAX_VARS,
    PLATFORM_ENV,
    describe,
    env_problems,
    refused_env_name,
    value_problem,
)
from control_plane.specs import ACTIVITY_SOCKET_ENV, CHECKPOINTS_ENV

# one or more names of every class of refused names, with (part of) the reason given
REFUSED = [
    ("LD_PRELOAD", "dynamic linker"),
    ("LD_LIBRARY_PATH", "dynamic linker"),
    ("LD_AUDIT", "dynamic linker"),
    ("GCONV_PATH", "C library"),
    ("GETCONF_DIR", "C library"),
    ("GLIBC_TUNABLES", "C library"),
    ("NLSPATH", "C library"),
    ("LOCPATH", "C library"),
    ("TZDIR", "C library"),
    ("MALLOC_ARENA_MAX", "C library"),
    ("MALLOC_TRACE", "C library"),
    ("HOSTALIASES", "resolver"),
    ("LOCALDOMAIN", "resolver"),
    ("RES_OPTIONS", "resolver"),
    ("GODEBUG", "Go runtime"),
    ("GOMEMLIMIT", "Go runtime"),
    ("GOGC", "Go runtime"),
    ("GOMAXPROCS", "Go runtime"),
    ("GOTRACEBACK", "Go runtime"),
    ("PYTHONPATH", "Python"),
    ("PYTHONSTARTUP", "Python"),
    ("PYTHONHOME", "Python"),
    ("IFS", "shell"),
    ("ENV", "shell"),
    ("BASH_ENV", "shell"),
    ("SHELLOPTS", "shell"),
    ("PATH", "set by the platform"),
    ("HOME", "set by the platform"),
    ("SHELL", "set by the platform"),
    ("TMPDIR", "set by the platform"),
    ("SSL_CERT_FILE", "TLS"),
    ("SSL_CERT_DIR", "TLS"),
    ("OPENSSL_CONF", "OpenSSL"),
    ("HTTP_PROXY", "proxy"),
    ("https_proxy", "proxy"),
    ("No_Proxy", "proxy"),
    ("all_proxy", "proxy"),
    ("PF_DATA_DIR", "pocketfleet"),
    ("PF_ACTIVITY_SOCKET", "pocketfleet"),
    ("PB_THUMBS_MAX_WORKERS", "PocketBase"),
    ("PB_ANYTHING", "PocketBase"),
]


@pytest.mark.parametrize(("name", "reason"), REFUSED)
def test_names_something_else_interprets_are_refused_with_the_reason(
    name: str, reason: str
) -> None:
    found = refused_env_name(name)
    assert found is not None and reason in found
    problems = env_problems({name: "x"})
    assert [str(problem) for problem in problems] == [f"{name}: {found}"]


@pytest.mark.parametrize(
    "name",
    ["1BAD", "A-B", "A B", "A\n", "A=B", "", "ÄPFEL", "A\x00", "x" * (MAX_NAME_LENGTH + 1)],
)
def test_names_that_are_not_identifiers_are_refused(name: str) -> None:
    assert refused_env_name(name) is not None


@pytest.mark.parametrize(
    "name",
    [
        "GREETING",
        "SMTP_PASSWORD",
        "_private",
        "TZ",
        "GOOGLE_API_KEY",  # GO* is not a prefix rule: only the Go runtime's own names
        "PATHS",
        "HOMEPAGE_URL",
        "HTTP_PROXY_TIMEOUT",
        "ld_preload",  # the dynamic linker reads the upper-case name only
        "x" * MAX_NAME_LENGTH,
    ],
)
def test_ordinary_names_are_accepted(name: str) -> None:
    assert refused_env_name(name) is None


def test_values_need_utf8_without_nul_and_a_bounded_size() -> None:
    assert value_problem("") is None
    assert value_problem("line one\nline two ✓") is None
    assert value_problem("é" * (MAX_VALUE_BYTES // 2)) is None
    assert "NUL" in str(value_problem("a\x00b"))
    assert "surrogate" in str(value_problem("a\ud800b"))
    assert "8193 bytes" in str(value_problem("x" * (MAX_VALUE_BYTES + 1)))
    assert "bytes" in str(value_problem("é" * (MAX_VALUE_BYTES // 2 + 1)))  # bytes, not chars


def test_the_whole_set_has_a_count_and_a_size_limit() -> None:
    many = {f"V{number}": "x" for number in range(MAX_VARS + 1)}
    assert [problem.concern for problem in env_problems(many)] == ["set"]
    big = {f"V{number}": "x" * MAX_VALUE_BYTES for number in range(MAX_TOTAL_BYTES // 8000)}
    assert "at most 65536" in describe(env_problems(big))
    assert env_problems({f"V{number}": "x" for number in range(MAX_VARS)}) == []


def test_only_checks_the_named_variables_but_the_limits_of_the_whole_set() -> None:
    env = {"LD_PRELOAD": "/x.so", "GREETING": "hi"}
    assert env_problems(env, only=["GREETING"]) == []
    assert [problem.name for problem in env_problems(env, only=["LD_PRELOAD"])] == ["LD_PRELOAD"]


def test_every_problem_is_named_and_the_message_is_bounded() -> None:
    env = {f"LD_{number}": "x" for number in range(8)}
    message = describe(env_problems(env))
    assert message.startswith("LD_0: interpreted by the dynamic linker; LD_1: ")
    assert message.endswith("; and 3 more")


def test_the_platform_variables_are_the_ones_specs_adds() -> None:
    assert {ACTIVITY_SOCKET_ENV, CHECKPOINTS_ENV} == PLATFORM_ENV
