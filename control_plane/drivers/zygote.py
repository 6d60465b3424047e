"""Zygotes: long-lived processes that have loaded an engine and fork a serving child per start.

An engine that has one says so with `Engine.zygote_command(version)` (the `pocketfleet`
engine: `python -m instance_runtime.zygote`, whose module docstring has the protocol). Starting
its instances by a fork skips the interpreter's start and imports: the difference between a
wake in tens of milliseconds and one in about a second.

Contract of `Zygotes.spawn`: returns the pid of a child that serves the instance (to be waited
on for health like any start), or None when there is no zygote to ask now — then the caller
starts the instance cold. A zygote is started on first use, in the background (that first
start is cold), and again whenever it has died; it exits with the control plane
(PR_SET_PDEATHSIG) while its children, in their own sessions, live on. Its socket lives in
`PF_DATA_DIR/zygotes` (mode 0700): only the control plane's user may ask it to fork.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import subprocess
import sysconfig
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from control_plane.drivers.base import InstanceSpec

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 1.0
ZYGOTE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
_ANSWER_TIMEOUT_S = 5.0


@cache
def others_can_import() -> bool:
    """Whether users other than ours can read this interpreter's standard library (every
    folder on the way open to others). A zygote's child switches to the instance's user and
    may still import from it; when it cannot (a Python installed under a private home, such
    as /root/.pyenv), instances that run as their own user start cold instead."""
    try:
        library = Path(sysconfig.get_paths()["stdlib"]).resolve()
        if not library.stat().st_mode & stat.S_IROTH:
            return False
        return all(folder.stat().st_mode & stat.S_IXOTH for folder in (library, *library.parents))
    except OSError:
        return False


def forked_for(pid: int, cmdline: list[str], spec: InstanceSpec) -> bool:
    """Whether `pid` is a child the engine's zygote forked for the instance: it carries the
    zygote's command line, and works in the instance's folder."""
    zygote = spec.engine.zygote_command(spec.version)
    if zygote is None or cmdline[: len(zygote)] != zygote:
        return False
    root = spec.layout.root
    try:
        return os.readlink(f"/proc/{pid}/cwd") in (str(root.absolute()), str(root.resolve()))
    except OSError:
        return False


class Zygotes:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def socket_path(self, key: str) -> Path:
        return self.folder / f"{key}.sock"

    def running(self, key: str) -> bool:
        """Whether zygote `key` was started and has not exited (it may still be importing)."""
        proc = self._procs.get(key)
        return proc is not None and proc.poll() is None

    async def spawn(
        self, key: str, command: list[str], request: dict[str, Any], fds: Sequence[int] = ()
    ) -> int | None:
        """Ask zygote `key` (started by `command` if it does not run) to fork a child as
        `request` says, handing it `fds` (SCM_RIGHTS); its pid, or None (see the module
        docstring)."""
        proc = self._procs.get(key)
        if proc is None or proc.poll() is not None:
            self._start(key, command)
            return None
        payload = json.dumps(request).encode() + b"\n"
        try:
            line = await asyncio.to_thread(self._exchange, self.socket_path(key), payload, fds)
        except FileNotFoundError:
            return None  # not listening yet: still importing
        except OSError as err:
            log.warning("zygote %s did not answer: %s", key, err)
            return None
        try:
            answer = json.loads(line)
            return int(answer["pid"])
        except (ValueError, KeyError, TypeError):
            log.warning("zygote %s refused: %s", key, line[:500])
            return None

    @staticmethod
    def _exchange(path: Path, payload: bytes, fds: Sequence[int]) -> bytes:
        """One request and its answer line over the zygote's socket (blocking)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(_CONNECT_TIMEOUT_S)
            try:
                sock.connect(str(path))
            except (ConnectionRefusedError, TimeoutError) as err:
                raise FileNotFoundError(str(err)) from err
            sock.settimeout(_ANSWER_TIMEOUT_S)
            socket.send_fds(sock, [payload], list(fds))
            answer = b""
            while not answer.endswith(b"\n"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                answer += chunk
        return answer

    def _start(self, key: str, command: list[str]) -> None:
        """Start zygote `key` from the event loop's thread (a parent-death signal is tied to
        the thread that forks, and that one lives as long as the control plane)."""
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = self.socket_path(key)
        path.unlink(missing_ok=True)
        with (self.folder / f"{key}.log").open("ab") as output:
            self._procs[key] = subprocess.Popen(
                [*command, "--socket", str(path)],
                cwd=self.folder,
                # never ours: a forked child's /proc/PID/environ shows the environment block
                # the zygote started with, whatever the child puts in os.environ after
                env=ZYGOTE_ENV,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        log.info("zygote %s starting (pid %d)", key, self._procs[key].pid)

    def close(self) -> None:
        """Stop the zygotes (their children, the instances, keep running)."""
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self._procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        self._procs.clear()
