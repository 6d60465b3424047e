"""An instance's live processes as the process driver (`process.py`) sees and ends them.

- `Proc`: one live process of an instance (with what the driver spawned for it, if it did:
  for a sandboxed process, the bwrap outside the sandbox), whether it is alive, its exit code,
  and whether it holds a given listening socket (`listeners.held_by`: the proof a listener is
  the instance's).
- Finding them: `naming` lists the pids whose command line names the instance's data folder
  (or is its engine's zygote); `names_data_dir` tells whether an argv does. These narrow a
  search down and prove nothing: the driver proves ownership itself (`ProcessDriver._own`).
- Ending them: `group_of` (the process group a process leads), `send` (a signal to the group,
  or to the process alone), `wait_gone`; `drop_sandbox` ends a sandbox made for a zygote's
  child (its pid 1 takes everything in it along).
- Reading them: `measure` (PSS else RSS, CPU seconds), `tail_lines` (a log's last lines),
  `line_on` (the first line a child writes on a pipe, read in the event loop), `accepting` (a
  TCP connect to 127.0.0.1:port), `folder_id` (a folder's device and inode).

Linux only: everything comes from /proc.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from control_plane.drivers.base import InstanceSpec, Stats
from control_plane.drivers.listeners import held_by

_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.05


@dataclass(frozen=True)
class Proc:
    """A live process of an instance; `popen` is set when the driver started it (for a
    sandboxed process: the bwrap outside the sandbox, which exits with it); `ready` is the
    read end of the pipe on which a zygote's child says it listens."""

    ps: psutil.Process
    popen: subprocess.Popen[bytes] | None
    sandboxed: bool = False
    ready: int | None = None

    @property
    def pid(self) -> int:
        return self.ps.pid

    def alive(self) -> bool:
        if self.popen is not None:
            exited = self.popen.poll() is not None
            if exited or not self.sandboxed:
                return not exited
        try:
            return self.ps.is_running() and self.ps.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def exit_code(self) -> int | None:
        """The exit code of what the driver started (for a sandbox: its engine's, which bwrap
        passes on a moment after the engine died)."""
        if self.popen is None:
            return None
        if self.sandboxed:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=1.0)
        return self.popen.returncode

    def listens_on(self, port: int) -> bool:
        """Whether this very process holds the socket listening on `port` (its inode is
        among this process's open files): proof that a listener is the instance's."""
        return held_by(self.pid, port)


# -- finding an instance's processes ------------------------------------------------------------


def data_dir_names(spec: InstanceSpec) -> frozenset[str]:
    """The names of the instance's data folder an argv may carry (absolute and resolved)."""
    data_dir = spec.layout.data_dir
    return frozenset({str(data_dir.absolute()), str(data_dir.resolve())})


def names_data_dir(cmdline: list[str], names: frozenset[str]) -> bool:
    """Whether an argv names the data folder (`DIR` or `--flag=DIR`)."""
    return any(arg in names or arg.partition("=")[2] in names for arg in cmdline)


def naming(spec: InstanceSpec) -> list[int]:
    """Pids whose command line names the instance's data folder (or is its zygote's)."""
    needles = [name.encode() for name in data_dir_names(spec)]
    zygote = spec.engine.zygote_command(spec.version)
    if zygote is not None:  # its children are told apart by their folder (`ProcessDriver._own`)
        needles.append("\0".join(zygote).encode())
    found: list[int] = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as file:
                raw = file.read()
        except OSError:
            continue
        if any(needle in raw for needle in needles):
            found.append(int(entry.name))
    return found


# -- ending them ----------------------------------------------------------------------------------


def group_of(proc: Proc) -> int | None:
    """The process group `proc` leads (None if it leads none, or it is our own)."""
    if proc.popen is not None:
        return proc.popen.pid  # started by us in a new session
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return None
    return pgid if pgid == proc.pid != os.getpgrp() else None


def send(proc: Proc, group: int | None, signum: int) -> None:
    """Signal the group (reaching what the leader left behind, too) or the live process."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group is not None:
            os.killpg(group, signum)
        elif proc.alive():
            os.kill(proc.pid, signum)


async def wait_gone(proc: Proc, timeout: float) -> bool:
    """Wait up to `timeout` seconds for `proc` to end; whether it did."""
    deadline = time.monotonic() + timeout
    delay = _POLL_FIRST_S
    while proc.alive():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(delay)
        delay = min(delay * 2, _POLL_MAX_S)
    return True


def drop_sandbox(holder: subprocess.Popen[bytes], sandbox_pid: int) -> None:
    """End a sandbox made for a zygote's child: its pid 1 takes everything in it along."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(sandbox_pid, signal.SIGKILL)
    holder.kill()
    holder.wait()


# -- reading them -------------------------------------------------------------------------------


def measure(proc: Proc) -> Stats | None:
    """Memory (PSS, else RSS) and CPU seconds (user + system) of `proc`. Blocking."""
    try:
        times = proc.ps.cpu_times()
        memory = proc.ps.memory_info().rss
    except psutil.Error:
        return None
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{proc.pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                memory = int(line.split()[1]) * 1024
                break
    return Stats(memory_bytes=memory, cpu_seconds=times.user + times.system)


def tail_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a file, reading backwards from its end in blocks."""
    if count <= 0:
        return []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as file:
        end = file.seek(0, os.SEEK_END)
        data = b""
        while end > 0 and data.count(b"\n") <= count:
            start = max(0, end - 65536)
            file.seek(start)
            data = file.read(end - start) + data
            end = start
    return data.decode("utf-8", errors="replace").splitlines()[-count:]


async def line_on(fd: int, timeout: float) -> bytes:
    """The first line written on the pipe `fd` (b"" at EOF, or if none came within `timeout`
    seconds), read in the event loop without a thread."""
    loop = asyncio.get_running_loop()
    said = bytearray()
    done = loop.create_future()

    def readable() -> None:
        try:
            chunk = os.read(fd, 256)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        said.extend(chunk)
        if (not chunk or b"\n" in said) and not done.done():
            done.set_result(None)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    try:
        await asyncio.wait_for(done, max(0.0, timeout))
    except TimeoutError:
        return b""
    finally:
        loop.remove_reader(fd)
    return bytes(said.partition(b"\n")[0]) + b"\n" if b"\n" in said else b""


def accepting(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def folder_id(path: Path | str) -> tuple[int, int] | None:
    """The (device, inode) of `path`, None if it cannot be read."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino
