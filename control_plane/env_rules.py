"""Which environment variables a tenant may give its instance, and why others are refused.

A tenant's variables reach its engine process (PocketBase or the `pocketfleet` runtime), which
runs the tenant's own code. A variable is refused when something other than the tenant's code
reads it to decide how the process itself behaves: the dynamic linker (`LD_PRELOAD` loads a
library into every program started with it), the C library and its resolver, the Go runtime
(PocketBase), Python (the `pocketfleet` engine), the shell, TLS and HTTP client libraries, or
pocketfleet and PocketBase themselves. Such names are either a way into other programs that
see the same environment, or knobs the platform sets (`PATH`, `HOME`, `TMPDIR`, `GOMEMLIMIT`).

Rules, all pure functions (no I/O, usable without HTTP):

- a name is an identifier `[A-Za-z_][A-Za-z0-9_]*` of at most `MAX_NAME_LENGTH` characters;
  names are case-sensitive (the programs above read the upper-case spelling), except the proxy
  variables, which HTTP clients also read in lower case and are refused in any case;
- a value is valid UTF-8 (no lone surrogate), has no NUL character and is at most
  `MAX_VALUE_BYTES` bytes once encoded;
- an instance has at most `MAX_VARS` variables, whose names and values total at most
  `MAX_TOTAL_BYTES` bytes (well below what the kernel accepts for a whole environment).

`refused_env_name(name)` gives the reason a name is refused (or None), for any caller that
must drop such a name, e.g. a driver starting an instance whose row predates a rule.
`env_problems(env)` lists every problem of a whole set of variables, each naming its variable
and the reason: `"LD_PRELOAD: interpreted by the dynamic linker"`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

MAX_NAME_LENGTH = 128
MAX_VALUE_BYTES = 8192
MAX_VARS = 100
MAX_TOTAL_BYTES = 65536

# The variables the platform itself gives an engine (`control_plane.specs` adds them to the
# tenant's own): a driver passes them although their names are refused to tenants.
PLATFORM_ENV = frozenset({"PF_ACTIVITY_SOCKET", "PF_CHECKPOINTS"})

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

LINKER = "interpreted by the dynamic linker"
LIBC = "interpreted by the C library"
RESOLVER = "interpreted by the C library's name resolver"
GO = "interpreted by the Go runtime"
PYTHON = "interpreted by Python"
SHELL = "interpreted by the shell"
PLATFORM = "set by the platform"
TLS = "interpreted by TLS libraries (which certificate authorities to trust)"
OPENSSL = "interpreted by OpenSSL (loads modules)"
PROXY = "interpreted by HTTP clients (an outbound proxy)"
POCKETFLEET = "reserved for pocketfleet"
# PocketBase 0.40 reads PB_THUMBS_MAX_WORKERS, PB_THUMBS_MAX_WAIT (apis/file.go),
# PB_FILES_DELETE_MAX_WORKERS (core/base.go) and PB_ID_TOKEN_LEEWAY (tools/auth/oidc.go): the
# prefix is the engine's own configuration, set (if ever) by the platform.
POCKETBASE = "interpreted by PocketBase (reserved for the platform)"

_EXACT: dict[str, str] = {
    # glibc's list of variables it ignores in privileged programs (unsecvars.h), beyond LD_*
    "GCONV_PATH": LIBC,
    "GETCONF_DIR": LIBC,
    "GLIBC_TUNABLES": LIBC,
    "LOCPATH": LIBC,
    "NLSPATH": LIBC,
    "TZDIR": LIBC,
    "HOSTALIASES": RESOLVER,
    "LOCALDOMAIN": RESOLVER,
    "RES_OPTIONS": RESOLVER,
    "RESOLV_HOST_CONF": RESOLVER,
    "NIS_PATH": RESOLVER,
    "GODEBUG": GO,
    "GOGC": GO,
    "GOMAXPROCS": GO,
    "GOMEMLIMIT": GO,
    "GOTRACEBACK": GO,
    "IFS": SHELL,
    "ENV": SHELL,
    "BASH_ENV": SHELL,
    "SHELLOPTS": SHELL,
    "BASHOPTS": SHELL,
    "CDPATH": SHELL,
    "GLOBIGNORE": SHELL,
    "PS4": SHELL,
    "PATH": PLATFORM,
    "HOME": PLATFORM,
    "SHELL": PLATFORM,
    "TMPDIR": PLATFORM,
    "SSL_CERT_FILE": TLS,
    "SSL_CERT_DIR": TLS,
    "OPENSSL_CONF": OPENSSL,
    "OPENSSL_ENGINES": OPENSSL,
    "OPENSSL_MODULES": OPENSSL,
}
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("LD_", LINKER),
    ("MALLOC_", LIBC),
    ("PYTHON", PYTHON),
    ("PF_", POCKETFLEET),
    ("PB_", POCKETBASE),
)
_ANY_CASE: dict[str, str] = {
    "HTTP_PROXY": PROXY,
    "HTTPS_PROXY": PROXY,
    "NO_PROXY": PROXY,
    "ALL_PROXY": PROXY,
}

Concern = Literal["name", "value", "set"]


@dataclass(frozen=True)
class EnvProblem:
    """One reason a set of variables is refused: about a variable's name, its value, or the
    set as a whole (`name` is then None)."""

    concern: Concern
    name: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}" if self.name is not None else self.reason


def refused_env_name(name: str) -> str | None:
    """Why `name` may not be a tenant's variable (e.g. "interpreted by the dynamic linker"),
    or None when it may."""
    if len(name) > MAX_NAME_LENGTH:
        return f"a name is at most {MAX_NAME_LENGTH} characters"
    if not _IDENTIFIER.fullmatch(name):
        return "not a valid variable name (letters, digits and '_', not starting with a digit)"
    if name in _EXACT:
        return _EXACT[name]
    for prefix, reason in _PREFIXES:
        if name.startswith(prefix):
            return reason
    return _ANY_CASE.get(name.upper())


def value_problem(value: str) -> str | None:
    """Why `value` may not be a variable's value, or None when it may."""
    if "\x00" in value:
        return "the value contains a NUL character"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "the value is not valid UTF-8 (it holds a lone surrogate)"
    if size > MAX_VALUE_BYTES:
        return f"the value is {size} bytes; at most {MAX_VALUE_BYTES}"
    return None


def _size(text: str) -> int:
    return len(text.encode("utf-8", errors="replace"))


def env_problems(env: Mapping[str, str], only: Iterable[str] | None = None) -> list[EnvProblem]:
    """Every problem of `env` as a tenant's whole set of variables. With `only`, the names and
    values of just those variables are checked (the others are kept as they are), and the
    limits of the whole set still apply."""
    problems: list[EnvProblem] = []
    for name in sorted(env if only is None else set(only) & set(env)):
        reason = refused_env_name(name)
        if reason is not None:
            problems.append(EnvProblem("name", name, reason))
        reason = value_problem(env[name])
        if reason is not None:
            problems.append(EnvProblem("value", name, reason))
    if len(env) > MAX_VARS:
        problems.append(EnvProblem("set", None, f"at most {MAX_VARS} variables ({len(env)} given)"))
    total = sum(_size(name) + _size(value) for name, value in env.items())
    if total > MAX_TOTAL_BYTES:
        problems.append(
            EnvProblem("set", None, f"the variables total {total} bytes; at most {MAX_TOTAL_BYTES}")
        )
    return problems


def describe(problems: list[EnvProblem], shown: int = 5) -> str:
    """The problems as one message: the first `shown`, then how many more."""
    text = "; ".join(str(problem) for problem in problems[:shown])
    if len(problems) > shown:
        text += f"; and {len(problems) - shown} more"
    return text
