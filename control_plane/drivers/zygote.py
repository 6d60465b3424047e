"""Zygotes: long-lived processes that have loaded an engine and fork a serving child per start.

An engine that has one says so with `Engine.zygote_command(version)` (the `pocketfleet`
engine: `python -m instance_runtime.zygote`, whose module docstring has the protocol). Starting
its instances by a fork skips the interpreter's start and imports: the difference between a
wake in tens of milliseconds and one in about a second.

Which path an instance takes (`fork_path`, said by `pocketfleet serve` at start-up): forked
unless the zygote is off or the engine has none, and unless its child could not read what it
imports. A child that runs as the instance's own uid still imports and reads by path after the
fork (a tenant's hook imports `json` at request time; Pillow and boto3 load lazily; botocore
reads its data files), so preloading cannot be complete: the interpreter's and the venv's
files must be readable by that uid. In a sandbox they are (bound read-only). Without one, when
they live behind a folder others cannot enter (a Python under /root, mode 0700), the zygote
gives the child a mount namespace in which that folder is an empty tmpfs showing only those
files, read-only (`Cover`; `instance_runtime.zygote`'s `show`). Only when that cannot be done
here (no mount namespaces, or the files themselves are closed to others) does it start cold.

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
import shutil
import socket
import stat
import subprocess
import sysconfig
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from control_plane.drivers import sandbox
from control_plane.drivers.base import InstanceSpec
from control_plane.engines.base import Engine
from control_plane.settings import Settings

log = logging.getLogger(__name__)

_CONNECT_TIMEOUT_S = 1.0
CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
ZYGOTE_ENV = {"PATH": CHILD_PATH, "LANG": "C.UTF-8"}
_ANSWER_TIMEOUT_S = 5.0
# what a forked child writes on its `ready` pipe (`instance_runtime.zygote`, `pass`)
PARKED = b"parked\n"
SERVING = b"serving\n"


@dataclass(frozen=True)
class Cover:
    """A folder instance users cannot enter, and the runtime's paths inside it: in a forked
    child's own mount namespace the folder is an empty tmpfs showing only those, read-only."""

    folder: Path
    paths: tuple[Path, ...]

    def request(self) -> dict[str, object]:
        return {"folder": str(self.folder), "paths": [str(path) for path in self.paths]}


@dataclass(frozen=True)
class ForkPath:
    """How instances of an engine start: `forked` by its zygote or cold, `why`, and the
    `covers` their forked children need."""

    forked: bool
    why: str
    covers: tuple[Cover, ...] = ()

    def describe(self) -> str:
        return f"{'forked by the zygote' if self.forked else 'started cold'}: {self.why}"


def _open_to_others(path: Path) -> bool:
    """Whether others may read `path` (and enter it, if a folder)."""
    mode = path.stat().st_mode
    return bool(mode & stat.S_IROTH) and (not stat.S_ISDIR(mode) or bool(mode & stat.S_IXOTH))


def _closed_ancestor(path: Path) -> Path | None:
    """The outermost folder above `path` that others cannot enter, if any."""
    closed = [folder for folder in path.parents if not folder.stat().st_mode & stat.S_IXOTH]
    return closed[-1] if closed else None


@cache
def runtime_view(paths: tuple[Path, ...]) -> tuple[tuple[Path, ...], tuple[Cover, ...]]:
    """For the runtime's `paths` (and the interpreter's library folders inside them): those
    other users cannot read even when shown, and the covers that show the others to them."""
    outermost = [p for p in paths if not any(p != o and p.is_relative_to(o) for o in paths)]
    libraries = {Path(path) for path in sysconfig.get_paths().values()}
    closed: list[Path] = []
    under: dict[Path, list[Path]] = {}
    for path in sorted(outermost):
        try:
            inner = [lib for lib in libraries if lib.is_relative_to(path) and lib.exists()]
            closed += [p for p in (path, *sorted(inner)) if not _open_to_others(p)]
            folder = _closed_ancestor(path)
        except OSError:
            continue  # gone: nothing to show
        if folder is not None:
            under.setdefault(folder, []).append(path)
    covers = tuple(Cover(folder, tuple(found)) for folder, found in sorted(under.items()))
    return tuple(closed), covers


@cache
def _cover_fails(folder: Path) -> str | None:
    """Why a mount namespace with a tmpfs over `folder` cannot be made here (None: it can),
    tried by util-linux's `unshare` and `mount` in a namespace that ends with them."""
    unshare = shutil.which("unshare", path=CHILD_PATH)
    mount = shutil.which("mount", path=CHILD_PATH)
    if unshare is None or mount is None:
        return "util-linux's unshare or mount is missing"
    argv = [unshare, "--mount", "--propagation", "slave", "--", mount, "-t", "tmpfs"]
    argv += ["-o", "size=4k,mode=0755", "pf-probe", str(folder)]
    try:
        done = subprocess.run(argv, capture_output=True, env=ZYGOTE_ENV, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        return str(err)
    return None if done.returncode == 0 else done.stderr.decode(errors="replace").strip()


def fork_path(
    engine: Engine, version: str, *, zygote: bool, own_uid: bool, sandboxed: bool
) -> ForkPath:
    """How the process driver starts `engine`'s instances: `own_uid` when they run as uids
    of their own (we are root), `sandboxed` when in a sandbox (see the module docstring)."""
    if not zygote:
        return ForkPath(False, "the zygote is off (PF_ZYGOTE=false)")
    if engine.zygote_command(version) is None:
        return ForkPath(False, f"the {engine.name} engine has no zygote")
    if sandboxed:
        why = "each child joins a sandbox made for it, where the runtime is bound read-only"
        return ForkPath(True, why)
    if not own_uid:
        return ForkPath(True, "they run as this control plane's user")
    paths = tuple(sorted({path.absolute() for path in engine.runtime_paths(version)}))
    closed, covers = runtime_view(paths)
    if closed:
        modes = ", ".join(f"{p} (mode {p.stat().st_mode & 0o7777:04o})" for p in closed[:3])
        return ForkPath(False, f"their uids cannot read {modes}")
    if not covers:
        return ForkPath(True, "they run as their own uids, who can read the runtime")
    folders = ", ".join(str(cover.folder) for cover in covers)
    for cover in covers:
        problem = _cover_fails(cover.folder)
        if problem is not None:
            return ForkPath(
                False,
                f"their uids cannot enter {folders}, and no mount namespace can be made "
                f"here to show them the runtime ({problem})",
            )
    why = (
        f"they run as their own uids, who cannot enter {folders}, so each child gets a "
        "mount namespace showing it the runtime's folders there, read-only"
    )
    return ForkPath(True, why, covers)


def serving_path(settings: Settings, engine: Engine) -> ForkPath:
    """`fork_path` for this machine's process driver and `settings` (as `Spawner` decides
    uids and sandboxes), for the start-up line of `pocketfleet serve`."""
    own_uid = os.geteuid() == 0 and settings.instance_users
    missing = sandbox.available()
    if own_uid and settings.sandbox == "on" and missing is not None:
        return ForkPath(False, f"instances cannot start: PF_SANDBOX=on but {missing}")
    sandboxed = own_uid and settings.sandbox != "off" and missing is None
    return fork_path(
        engine,
        engine.default_version(),
        zygote=settings.zygote,
        own_uid=own_uid,
        sandboxed=sandboxed,
    )


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
