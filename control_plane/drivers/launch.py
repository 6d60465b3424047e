"""Launching an instance's process fast: its limits and user set without forking the control
plane, and readiness seen from its port.

- `wrapped_argv()`: the argv behind util-linux's `prlimit` (rlimits) and `setpriv` (uid/gid, no
  supplementary groups, hence no capabilities), which exec it in turn. With them `subprocess`
  spawns with vfork: a fork of the control plane for a Python `preexec_fn` (and setuid) took
  ~15 ms of a wake here, this takes ~1 ms. `limits()` is the `preexec_fn` fallback.
- `port_accepts()`: one non-blocking connection attempt to a loopback port (a few µs).
"""

from __future__ import annotations

import asyncio
import resource
import shutil
import socket
from collections.abc import Callable

# util-linux (essential on Debian): with them the child's limits and user are set by exec'd
# helpers rather than by a Python `preexec_fn`, so `subprocess` spawns with vfork. Forking the
# control plane for a `preexec_fn` (and setuid) took ~15 ms of a wake here; this takes ~1 ms.
ADDRESS_SPACE_HEADROOM_MB = 2048
PRLIMIT = shutil.which("prlimit", path="/usr/bin:/bin")
SETPRIV = shutil.which("setpriv", path="/usr/bin:/bin")


def address_space_limit_mb(memory_limit_mb: int) -> int:
    """RLIMIT_AS for a memory limit: 4x it, and never less than the limit + 2 GiB."""
    return max(4 * memory_limit_mb, memory_limit_mb + ADDRESS_SPACE_HEADROOM_MB)


def open_files_limit(wanted: int) -> int:
    """`wanted`, or our own hard RLIMIT_NOFILE if that is lower (a child cannot exceed it)."""
    hard_files = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return wanted if hard_files == resource.RLIM_INFINITY else min(wanted, hard_files)


def limits_argv(max_open_files: int, address_space: int, max_processes: int) -> list[str]:
    """`prlimit` setting the rlimits (soft = hard) of what it executes next, then `--`."""
    if PRLIMIT is None:
        raise FileNotFoundError("prlimit is not installed (Debian package util-linux)")
    files = open_files_limit(max_open_files)
    return [
        PRLIMIT,
        f"--nofile={files}:{files}",
        f"--as={address_space}:{address_space}",
        f"--nproc={max_processes}:{max_processes}",
        "--",
    ]


def wrapped_argv(
    argv: list[str], max_open_files: int, address_space: int, uid: int | None, max_processes: int
) -> list[str]:
    """`argv` behind util-linux's `prlimit` (the rlimits, soft = hard) and, with a `uid`,
    `setpriv` (real, effective and saved uid and gid = `uid`, no supplementary groups, and so
    no capabilities); [] when those tools are missing. RLIMIT_NPROC only with a `uid` (it
    counts every process of the user: without a uid of its own that would be ours)."""
    if PRLIMIT is None or (uid is not None and SETPRIV is None):
        return []
    prefix = limits_argv(max_open_files, address_space, max_processes)
    if uid is None:
        prefix = [word for word in prefix if not word.startswith("--nproc=")]
    else:
        assert SETPRIV is not None
        prefix += [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--"]
    return prefix + argv


def limits(max_open_files: int, address_space_bytes: int) -> Callable[[], None]:
    """A preexec function setting the child's rlimits (soft = hard; never above our hard)."""
    max_open_files = open_files_limit(max_open_files)

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_open_files, max_open_files))
        resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes, address_space_bytes))

    return apply


def port_is_free(port: int) -> bool:
    """Whether 127.0.0.1:port could be bound now by a server that sets SO_REUSEADDR (as Go's
    and Python's servers do): nothing binds or listens on it; TIME_WAIT is no obstacle."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def port_accepts(port: int) -> bool:
    """Whether 127.0.0.1:port accepts a TCP connection now (without blocking the loop)."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setblocking(False)
        try:
            await loop.sock_connect(probe, ("127.0.0.1", port))
        except OSError:
            return False
        return True
