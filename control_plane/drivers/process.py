"""The `process` driver: every instance is a child process serving on 127.0.0.1:PORT.

- Each child leads its own session (`start_new_session`), so it outlives a restart of the
  control plane; the pid is stored by the caller and passed back in.
- Isolation: the instance folder is mode 0700; when the control plane runs as root and the
  spec has a uid, the folder tree belongs to that uid and the child runs as uid/gid `uid` with
  no supplementary groups, inside a bubblewrap sandbox of its own (`sandbox.py`: own mount,
  pid, ipc and uts namespaces; only its folder writable; no capabilities, no_new_privs) unless
  `PF_SANDBOX=off`. The child gets a fresh minimal environment (never ours) plus `spec.env`,
  with stdout and stderr appended to the layout's log file.
- Identity: a sandboxed pid counts as the instance's only if it runs as the instance's uid in
  a sandbox (`sandbox.is_sandbox_engine`: nothing another tenant runs can pass it), and the
  proxy is given a port only once its listening socket is proven to be that process's own
  (`listeners.py`). A port found taken by anything else is a `PortTakenError` (the caller
  moves the instance to another port), never a failed start. Unsandboxed (not root), a pid
  counts as the instance's if its command line names the instance's data folder.
- Limits: RLIMIT_NOFILE; RLIMIT_NPROC (`spec.max_processes`: every instance has a uid of its
  own, so this bounds its processes and threads); RLIMIT_AS as a backstop only, well above the
  memory limit, because Go runtimes reserve ~1.3 GiB of address space at idle (a Go server
  measured here died at startup under 1 GiB); GOMEMLIMIT (read by Go runtimes, ignored by
  others) as the soft limit; and per-instance cgroups (`cgroups.py`: memory hard limit, pids,
  CPU weight; v1 or v2, where ours lets us create them; skipped with a debug line otherwise).
- Linux only: liveness and identity come from /proc.

Nothing here knows which engine runs: commands, health path and folders come from the spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

from control_plane.drivers import sandbox
from control_plane.drivers.base import (
    Driver,
    InstanceSpec,
    Observed,
    PortTakenError,
    RunState,
    StartError,
    Stats,
)
from control_plane.drivers.cgroups import InstanceCgroups, cgroups_of
from control_plane.drivers.launch import (
    address_space_limit_mb,
    open_files_limit,
    port_accepts,
    port_is_free,
)
from control_plane.drivers.listeners import held_by
from control_plane.drivers.spawning import Spawner
from control_plane.drivers.zygote import Zygotes, fork_path, forked_for
from control_plane.engines.base import EngineError
from control_plane.settings import Settings

log = logging.getLogger(__name__)

_POLL_FIRST_S = 0.002
_POLL_MAX_S = 0.05
# A starting instance's port is tried every millisecond for its first 200 ms (a PocketBase
# starts in 20-40 ms here, and a connection attempt to a closed loopback port costs a few
# microseconds), then with a back-off up to 20 ms.
_PORT_POLL_S = 0.001
_PORT_POLL_TIGHT_FOR_S = 0.2
_PORT_POLL_MAX_S = 0.02
_STATUS_HEALTH_TIMEOUT_S = 0.5
_TASK_TIMEOUT_S = 60.0
_ERROR_LOG_LINES = 20
_ROTATED_SUFFIX = ".1"


def _data_dir_names(spec: InstanceSpec) -> frozenset[str]:
    data_dir = spec.layout.data_dir
    return frozenset({str(data_dir.absolute()), str(data_dir.resolve())})


def _names_data_dir(cmdline: list[str], names: frozenset[str]) -> bool:
    """Whether an argv names the data folder (`DIR` or `--flag=DIR`)."""
    return any(arg in names or arg.partition("=")[2] in names for arg in cmdline)


def _accepting(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _tail_lines(path: Path, count: int) -> list[str]:
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


def _drop_sandbox(holder: subprocess.Popen[bytes], sandbox_pid: int) -> None:
    """End a sandbox made for a zygote's child: its pid 1 takes everything in it along."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(sandbox_pid, signal.SIGKILL)
    holder.kill()
    holder.wait()


@dataclass(frozen=True)
class _Proc:
    """A live process of an instance; `popen` is set when this driver started it (for a
    sandboxed process: the bwrap outside the sandbox, which exits with it)."""

    ps: psutil.Process
    popen: subprocess.Popen[bytes] | None
    sandboxed: bool = False

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
        """The exit code of what this driver started (for a sandbox: its engine's, which bwrap
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


class ProcessDriver(Driver):
    """Instances as local child processes. See the module docstring for the guarantees."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cgroups = InstanceCgroups.here()
        self.spawner = Spawner(settings)
        # pid of the instance's process (inside its sandbox, if any) -> what we spawned
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._child_of: dict[str, int] = {}
        self._forked: dict[str, int] = {}  # instance id -> pid forked by a zygote
        self.zygotes = Zygotes(settings.data_dir / "zygotes") if settings.zygote else None
        self._locks: dict[str, asyncio.Lock] = {}
        self._client: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        """Close the HTTP client and stop the zygotes. Running instances are left running."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self.zygotes is not None:
            await asyncio.to_thread(self.zygotes.close)

    # -- the Driver contract ------------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> int:
        """Start the instance (or adopt the one already serving it) and wait until healthy.

        Adopts a process this driver started, or one proven the instance's (`_own`) which
        holds the socket listening on `spec.port`; ends what the instance left running outside
        its sandbox (an older pocketfleet's process); raises `PortTakenError` while anything
        else holds the port. On failure kills what it started or adopted.
        """
        async with self._lock(spec):
            self._reap()
            deadline = time.monotonic() + self.settings.start_timeout_s
            try:
                proc = await asyncio.to_thread(self._existing, spec)
            except PortTakenError:
                if not await self._end_unsandboxed(spec):
                    raise
                proc = await asyncio.to_thread(self._existing, spec)
            if proc is None:
                return await self._launch(spec, deadline)
            await self._healthy_or_kill(spec, proc, deadline)
            return proc.pid

    async def _launch(self, spec: InstanceSpec, deadline: float) -> int:
        """Start the serving process (forked by the engine's zygote if it has one running,
        else cold) and wait until it is healthy; return its pid."""
        try:
            argv = spec.engine.serve_command(spec.version, spec.layout, spec.port)
        except EngineError as err:
            raise StartError(f"instance {spec.id}: {err}") from err
        spawned = time.monotonic()
        forked = await self._fork(spec, argv)
        proc = forked if forked is not None else await asyncio.to_thread(self._spawn, spec, argv)
        running_ms = (time.monotonic() - spawned) * 1000
        # Moving a process into a cgroup takes ~10 ms on cgroup v1: overlap it with the
        # engine's own start instead of adding it.
        joining = asyncio.create_task(
            asyncio.to_thread(self._join_cgroup, spec, proc.pid), name="join cgroup"
        )
        try:
            await self._healthy_or_kill(spec, proc, deadline)
            healthy_ms = (time.monotonic() - spawned) * 1000
        finally:
            await asyncio.shield(joining)
        took_ms = (time.monotonic() - spawned) * 1000
        how = "forked" if forked is not None else "cold"
        log.info(
            "instance %s: %s pid %d healthy in %.1f ms (running after %.1f ms, healthy after "
            "%.1f ms)",
            spec.id,
            how,
            proc.pid,
            took_ms,
            running_ms,
            healthy_ms,
        )
        return proc.pid

    async def stop(self, spec: InstanceSpec, pid: int | None) -> None:
        """SIGTERM the process group, SIGKILL after `stop_timeout_s`; idempotent.

        When `pid` is None, dead or not the instance's, stops whatever process names the
        instance's data folder instead (there is usually none).
        """
        async with self._lock(spec):
            self._reap()
            proc = self._own(spec, pid)
            targets = [proc] if proc is not None else await asyncio.to_thread(self._scan, spec)
            for target in targets:
                await self._end(spec, target, graceful=True)
            if not targets and not await self._end_unsandboxed(spec):
                await asyncio.to_thread(self.cgroups.drop, spec.id)

    async def _end_unsandboxed(self, spec: InstanceSpec) -> bool:
        """End the instance's processes running outside its sandbox (`_unsandboxed`); whether
        there were any."""
        leftovers = await asyncio.to_thread(self._unsandboxed, spec)
        for old in leftovers:
            log.warning("instance %s: ending pid %d, left outside its sandbox", spec.id, old.pid)
            await self._end(spec, old, graceful=True)
        return bool(leftovers)

    async def status(self, spec: InstanceSpec, pid: int | None, *, health: bool = True) -> Observed:
        """RUNNING (with one quick health probe unless `health=False`) if `pid`, or the process
        this driver started for the instance, is alive and the instance's; else STOPPED."""
        self._reap()
        proc = (
            self._own(spec, pid)
            or self._own(spec, self._child_of.get(spec.id))
            or self._own(spec, self._forked.get(spec.id))
        )
        if proc is None:
            return Observed(RunState.STOPPED)
        healthy = health and await self._probe(spec, _STATUS_HEALTH_TIMEOUT_S)
        return Observed(RunState.RUNNING, proc.pid, healthy)

    def seems_alive(self, pid: int) -> bool:
        """Our own child: not exited (exact); another process (adopted, or forked by a zygote):
        the pid exists."""
        popen = self._children.get(pid)
        if popen is not None:
            return popen.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def stats(self, spec: InstanceSpec, pid: int | None) -> Stats | None:
        """Memory (PSS, else RSS) and CPU seconds (user + system) of the instance's process."""
        proc = self._own(spec, pid)
        return None if proc is None else await asyncio.to_thread(self._measure, proc)

    async def run_task(
        self, spec: InstanceSpec, argv: list[str], env: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """Run `argv` like the instance (uid, env, folder, limits, its own sandbox), with
        `env` added to its environment as the platform's; 60 s timeout.

        Returns the exit code and stdout+stderr; 127 when it cannot be executed at all.
        """
        if env:
            spec = dataclasses.replace(spec, platform_env={**spec.platform_env, **env})
        return await asyncio.to_thread(self._run_task, spec, argv)

    async def remove(self, spec: InstanceSpec, *, keep_at: Path | None) -> None:
        """Stop anything left, then move the folder to `keep_at` (parents created; a suffix
        `.N` is added if `keep_at` exists) or delete it. Idempotent."""
        await self.stop(spec, None)
        await asyncio.to_thread(self._move_or_delete, spec, keep_at)

    def read_logs(self, spec: InstanceSpec, tail: int) -> list[str]:
        """The last `tail` lines of the log, continuing into the rotated `.1` file if short."""
        current = spec.layout.log_file
        lines = _tail_lines(current, tail)
        if len(lines) < tail:
            rotated = current.with_name(current.name + _ROTATED_SUFFIX)
            lines = _tail_lines(rotated, tail - len(lines)) + lines
        return lines

    def cap_log(self, spec: InstanceSpec) -> None:
        """If the log exceeds `spec.log_max_bytes`, copy it to `output.log.1` and truncate it
        in place (the child appends with O_APPEND, so it keeps writing at the new end).
        Blocking (copies up to the cap); lines written during the copy may be lost."""
        current = spec.layout.log_file
        try:
            fd = os.open(current, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return
        with os.fdopen(fd, "r+b") as file:
            info = os.fstat(fd)
            if info.st_size <= spec.log_max_bytes:
                return
            out_fd, tmp = tempfile.mkstemp(prefix=".output.", dir=current.parent)
            try:
                with os.fdopen(out_fd, "wb") as out:
                    shutil.copyfileobj(file, out, 1 << 20)
                    if os.geteuid() == 0:
                        os.fchown(out.fileno(), info.st_uid, info.st_gid)
                os.replace(tmp, current.with_name(current.name + _ROTATED_SUFFIX))
            finally:
                Path(tmp).unlink(missing_ok=True)
            os.ftruncate(fd, 0)

    # -- processes ----------------------------------------------------------------------------

    def _lock(self, spec: InstanceSpec) -> asyncio.Lock:
        return self._locks.setdefault(spec.id, asyncio.Lock())

    def _reap(self) -> None:
        """Collect exited children so they do not stay zombies."""
        for pid, popen in list(self._children.items()):
            if popen.poll() is not None:
                del self._children[pid]
        for instance_id, pid in list(self._child_of.items()):
            if pid not in self._children:
                del self._child_of[instance_id]

    def _own(self, spec: InstanceSpec, pid: int | None) -> _Proc | None:
        """The live process `pid` if it is the instance's: the first process of a sandbox
        running as its uid (`sandbox.is_sandbox_engine`), or unsandboxed, a process whose argv
        names the data folder."""
        if pid is None or pid <= 0 or pid == os.getpid():
            return None
        popen = self._children.get(pid)
        if popen is not None and popen.poll() is not None:
            return None
        try:
            ps = psutil.Process(pid)
            if ps.status() == psutil.STATUS_ZOMBIE:
                return None
            if self.sandboxed(spec):
                uid = self.spawner.run_as(spec)
                assert uid is not None
                return _Proc(ps, popen, True) if sandbox.is_sandbox_engine(pid, uid) else None
            cmdline = ps.cmdline()
            if not _names_data_dir(cmdline, _data_dir_names(spec)) and not forked_for(
                pid, cmdline, spec
            ):
                return None
        except psutil.Error:
            return None
        return _Proc(ps, popen)

    def _scan(self, spec: InstanceSpec) -> list[_Proc]:
        """Every live process of the instance (`_own`) whose argv names its data folder (the
        argv only narrows the search down: it proves nothing). Reads /proc."""
        return [proc for pid in self._naming(spec) if (proc := self._own(spec, pid)) is not None]

    def _unsandboxed(self, spec: InstanceSpec) -> list[_Proc]:
        """Processes of the instance's uid outside any sandbox that name its folder: what an
        older pocketfleet (or `PF_SANDBOX=off`) left running. Only that instance runs as its
        uid, so ending them touches nobody else. Empty unless the instance is sandboxed."""
        uid = self.spawner.run_as(spec)
        if uid is None or not self.sandboxed(spec):
            return []
        found = []
        for pid in self._naming(spec):
            facts = sandbox.process_facts(pid)
            if facts is not None and facts.real_uid == uid and len(facts.namespace_pids) == 1:
                with contextlib.suppress(psutil.Error):
                    found.append(_Proc(psutil.Process(pid), None))
        return found

    def _naming(self, spec: InstanceSpec) -> list[int]:
        """Pids whose command line names the instance's data folder (or is its zygote's)."""
        names = _data_dir_names(spec)
        needles = [name.encode() for name in names]
        zygote = spec.engine.zygote_command(spec.version)
        if zygote is not None:  # its children are told apart by their folder (`_own`)
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

    def _existing(self, spec: InstanceSpec) -> _Proc | None:
        """A process already serving the instance, None if the port is free; raises
        `StartError` if another process has the port."""
        proc = self._own(spec, self._child_of.get(spec.id)) or self._own(
            spec, self._forked.get(spec.id)
        )
        if proc is not None:
            return proc
        if not _accepting(spec.port) and port_is_free(spec.port):
            return None
        for candidate in self._scan(spec):
            if candidate.listens_on(spec.port):
                return candidate
        raise PortTakenError(spec.id, spec.port)

    def sandboxed(self, spec: InstanceSpec) -> bool:
        """Whether the instance's processes run in a sandbox (`Spawner.sandboxed`)."""
        return self.spawner.sandboxed(spec)

    def _open_log(self, spec: InstanceSpec) -> tuple[int | None, int]:
        """Prepare the folder; return the uid to run as and the log opened for appending
        (owned by that uid). Blocking."""
        try:
            uid = self._prepare(spec)
            log_fd = os.open(
                spec.layout.log_file,
                os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
            if uid is not None:
                os.fchown(log_fd, uid, uid)
        except OSError as err:
            raise StartError(f"instance {spec.id}: cannot prepare its folder: {err}") from err
        return uid, log_fd

    async def _fork(self, spec: InstanceSpec, argv: list[str]) -> _Proc | None:
        """The serving process forked by the engine's zygote, or None when there is none to
        ask now (the caller starts it cold): see `control_plane.drivers.zygote`. Sandboxed,
        the child joins a sandbox made for it (`sandbox.HOLDER`)."""
        command = spec.engine.zygote_command(spec.version) if self.zygotes else None
        if command is None or self.zygotes is None:
            return None
        sandboxed = self.sandboxed(spec)
        path = await asyncio.to_thread(
            fork_path,
            spec.engine,
            spec.version,
            zygote=True,
            own_uid=self.spawner.run_as(spec) is not None,
            sandboxed=sandboxed,
        )
        if not path.forked:
            return None
        key = f"{spec.engine.name}-{spec.version}"
        if not self.zygotes.running(key):
            await self.zygotes.spawn(key, command, {})  # starts it, for the next start
            return None
        uid, log_fd = await asyncio.to_thread(self._open_log, spec)
        os.close(log_fd)
        request: dict[str, object] = {
            "argv": argv,
            "cwd": str(spec.layout.root.absolute()),
            "env": self.spawner.child_env(spec),
            "log": str(spec.layout.log_file.absolute()),
            "uid": uid,
            "nofile": open_files_limit(spec.max_open_files),
            "address_space": address_space_limit_mb(spec.memory_limit_mb) * 1024 * 1024,
        }
        if not sandboxed:
            if path.covers:  # the child's uid cannot enter where the runtime lives
                request["show"] = [cover.request() for cover in path.covers]
            pid = await self.zygotes.spawn(key, command, request)
            if pid is None:
                return None
            self._forked[spec.id] = pid
            return self._forked_proc(spec, pid, None)
        holder, sandbox_pid, alive_fd = await asyncio.to_thread(self.spawner.holder, spec)
        request.update(join=sandbox_pid, nproc=spec.max_processes, no_new_privs=True)
        try:
            pid = await self.zygotes.spawn(key, command, request, fds=[alive_fd])
        finally:
            os.close(alive_fd)  # the child holds it now: the holder ends when the child does
        if pid is None:
            await asyncio.to_thread(_drop_sandbox, holder, sandbox_pid)
            return None
        self._children[pid] = holder
        self._forked[spec.id] = pid
        try:
            return self._forked_proc(spec, pid, holder)
        except StartError:
            await asyncio.to_thread(_drop_sandbox, holder, sandbox_pid)
            raise

    def _forked_proc(
        self, spec: InstanceSpec, pid: int, holder: subprocess.Popen[bytes] | None
    ) -> _Proc:
        try:
            return _Proc(psutil.Process(pid), None, holder is not None)
        except psutil.Error:
            raise StartError(self._failure(spec, "exited at once")) from None

    def _spawn(self, spec: InstanceSpec, argv: list[str]) -> _Proc:
        """Prepare the folder and start the serving process (blocking; run in a thread)."""
        sandboxed = self.sandboxed(spec)
        _, log_fd = self._open_log(spec)
        try:
            popen, pid = self.spawner.popen(spec, argv, log_fd)
        except (OSError, subprocess.SubprocessError) as err:
            raise StartError(f"instance {spec.id}: cannot run {argv[0]}: {err}") from err
        finally:
            os.close(log_fd)
        self._children[pid] = popen
        self._child_of[spec.id] = pid
        try:
            return _Proc(psutil.Process(pid), popen, sandboxed)
        except psutil.Error:
            popen.wait()
            raise StartError(
                self._failure(spec, f"exited at once with code {popen.returncode}")
            ) from None

    def _prepare(self, spec: InstanceSpec) -> int | None:
        """Create the folder layout (root 0700, parent 0711) and what the engine writes in it
        (`Engine.prepare`), owned by the instance's uid when we are root; return that uid
        (None: run as ourselves)."""
        uid = self.spawner.run_as(spec)
        root = spec.layout.root.absolute()
        root.parent.mkdir(parents=True, exist_ok=True)
        root.parent.chmod(0o711)
        if uid is not None:
            for folder in root.parent.parents:
                info = folder.stat()
                if not info.st_mode & 0o001 and info.st_uid != uid:
                    raise StartError(
                        f"instance {spec.id}: {folder} is not traversable by uid {uid} "
                        "(it needs o+x, e.g. mode 0711)"
                    )
        root.mkdir(mode=0o700, exist_ok=True)
        root.chmod(0o700)
        first_time = uid is not None and root.stat().st_uid != uid
        for folder in spec.layout.folders():
            folder.mkdir(mode=0o700, exist_ok=True)
        written = spec.engine.prepare(spec.version, spec.layout)
        if uid is None:
            return None
        if first_time:  # hand over the whole tree (lchown: never follow a tenant's symlink)
            for parent, dirs, files in os.walk(root):
                for name in (*dirs, *files):
                    os.chown(os.path.join(parent, name), uid, uid, follow_symlinks=False)
        else:
            for path in (*spec.layout.folders(), *written):
                os.chown(path, uid, uid, follow_symlinks=False)
        os.chown(root, uid, uid, follow_symlinks=False)
        return uid

    def _join_cgroup(self, spec: InstanceSpec, pid: int) -> None:
        """Move `pid` into the instance's cgroups (memory, pids, CPU), where cgroups work."""
        self.cgroups.join(
            spec.id,
            pid,
            memory_bytes=spec.memory_limit_mb * 1024 * 1024,
            max_processes=spec.max_processes,
            cpu_weight=spec.cpu_weight,
        )

    async def _healthy_or_kill(self, spec: InstanceSpec, proc: _Proc, deadline: float) -> None:
        """Wait for the port to accept connections (tried every 1 ms for 200 ms, then with a
        back-off to 20 ms), then GET the health URL until 200 (same back-off): no health
        request is wasted on a server that is not listening yet. On exit, timeout or
        cancellation kill the process group and raise `StartError` with the log tail."""
        began = time.monotonic()
        delay = _PORT_POLL_S
        listening = False
        try:
            while True:
                if not proc.alive():
                    code = proc.exit_code()
                    how = "exited" if code is None else f"exited with code {code}"
                    raise StartError(self._failure(spec, f"{how} before it was healthy"))
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    timeout = self.settings.start_timeout_s
                    raise StartError(self._failure(spec, f"was not healthy after {timeout:g}s"))
                if not listening and await port_accepts(spec.port):
                    if not await asyncio.to_thread(proc.listens_on, spec.port):
                        # not our process's socket (ours would have failed to bind): move
                        raise PortTakenError(spec.id, spec.port)
                    listening = True
                if listening and await self._probe(spec, min(remaining, 2.0)):
                    return
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                if time.monotonic() - began > _PORT_POLL_TIGHT_FOR_S:
                    delay = min(delay * 2, _PORT_POLL_MAX_S)
        except BaseException:
            await self._end(spec, proc, graceful=False)
            raise

    def _failure(self, spec: InstanceSpec, what: str) -> str:
        lines = self.read_logs(spec, _ERROR_LOG_LINES)
        tail = "\n".join(lines) if lines else "(empty)"
        engine = f"{spec.engine.name} {spec.version}"
        return f"instance {spec.id}: {engine} {what}; last log lines:\n{tail}"

    async def _probe(self, spec: InstanceSpec, timeout: float) -> bool:
        """One GET of the engine's health path; True on 200."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
            )
        url = f"http://127.0.0.1:{spec.port}{spec.engine.health_path}"
        try:
            response = await self._client.get(url, timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    def _group_of(self, proc: _Proc) -> int | None:
        """The process group `proc` leads (None if it leads none, or it is our own)."""
        if proc.popen is not None:
            return proc.popen.pid  # started by us in a new session
        try:
            pgid = os.getpgid(proc.pid)
        except ProcessLookupError:
            return None
        return pgid if pgid == proc.pid != os.getpgrp() else None

    def _send(self, proc: _Proc, group: int | None, signum: int) -> None:
        """Signal the group (reaching what the leader left behind, too) or the live process."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group is not None:
                os.killpg(group, signum)
            elif proc.alive():
                os.kill(proc.pid, signum)

    async def _wait_gone(self, proc: _Proc, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST_S
        while proc.alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(delay)
            delay = min(delay * 2, _POLL_MAX_S)
        return True

    async def _end(self, spec: InstanceSpec, proc: _Proc, *, graceful: bool) -> None:
        """End `proc` and its process group: SIGTERM and up to the stop timeout if `graceful`,
        then SIGKILL; finally drop its cgroups. A sandboxed process alone gets the SIGTERM (the
        bwrap outside it would die of it at once, while the server shuts down); then the
        sandbox goes whole: the SIGKILL of its pid 1 (the engine started cold, or the reaper of
        the sandbox a zygote's child joined) ends every process in it."""
        cgroups = cgroups_of(proc.pid)
        group = self._group_of(proc)
        reaper = sandbox.reaper_of(proc.pid) if proc.sandboxed else None
        if graceful:
            self._send(proc, None if proc.sandboxed else group, signal.SIGTERM)
            timeout = self.settings.stop_timeout_s
            if not await self._wait_gone(proc, timeout):
                log.warning("pid %d ignored SIGTERM for %gs; killing it", proc.pid, timeout)
        self._send(proc, group, signal.SIGKILL)
        if proc.sandboxed:
            self._send(proc, None, signal.SIGKILL)
        if reaper is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(reaper, signal.SIGKILL)
        await self._wait_gone(proc, 5.0)
        if proc.popen is not None:
            await asyncio.to_thread(proc.popen.wait, 5.0)
        self._reap()
        await asyncio.to_thread(self.cgroups.drop_all, [*cgroups, *self.cgroups.folders(spec.id)])

    # -- blocking helpers (run in threads) ----------------------------------------------------

    def _measure(self, proc: _Proc) -> Stats | None:
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

    def _run_task(self, spec: InstanceSpec, argv: list[str]) -> tuple[int, str]:
        try:
            self._prepare(spec)
            popen, _ = self.spawner.popen(spec, argv, subprocess.PIPE)
        except StartError as err:
            return 127, err.reason
        except (OSError, subprocess.SubprocessError) as err:
            return 127, f"cannot run {argv[0]}: {err}"
        try:
            output, _ = popen.communicate(timeout=_TASK_TIMEOUT_S)
            note = b""
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(popen.pid, signal.SIGKILL)
            output, _ = popen.communicate()
            note = f"\n[killed after {_TASK_TIMEOUT_S:g}s]".encode()
        return popen.returncode, (output + note).decode("utf-8", errors="replace")

    def _move_or_delete(self, spec: InstanceSpec, keep_at: Path | None) -> None:
        self.cgroups.drop(spec.id)
        root = spec.layout.root
        if not root.exists():
            return
        if keep_at is None:
            shutil.rmtree(root)
            return
        target, n = keep_at, 0
        while target.exists():
            n += 1
            target = keep_at.with_name(f"{keep_at.name}.{n}")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(root, target)
