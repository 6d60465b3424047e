"""The `process` driver: every instance is a child process serving on 127.0.0.1:PORT.

- Each child leads its own session (`start_new_session`), so it outlives a restart of the
  control plane; the pid is stored by the caller and passed back in.
- Isolation: the instance folder is mode 0700 (`folders.py`); when the control plane runs as
  root and the spec has a uid, the folder tree belongs to that uid and the child runs as
  uid/gid `uid` with no supplementary groups, inside a bubblewrap sandbox of its own
  (`sandbox.py`: own mount, pid, ipc and uts namespaces; only its folder writable; no
  capabilities, no_new_privs) unless `PF_SANDBOX=off`. The child gets a fresh minimal
  environment (never ours) plus `spec.env`, with stdout and stderr appended to the layout's
  log file.
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
- Forked starts (an engine with a zygote: `zygote.py`, `forks.py`): the child says on a pipe
  when it listens, so the driver waits on that pipe (no port polling, no health request), then
  proves the listener is the child's as above. A sandboxed instance that hibernates (`asleep`)
  gets a standby (`standby.py`: a parked child in a sandbox of its own, ready for its go),
  which its next start uses when it still fits; any stop or removal drops it.
- Linux only: liveness and identity come from /proc (`processes.py`).

Here: the `Driver` contract, which process is the instance's (`_own`, `_scan`,
`_unsandboxed`), cold and forked launches, health waits, stops, logs and tasks. Nothing here
knows which engine runs: commands, health path and folders come from the spec.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

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
from control_plane.drivers.folders import move_or_delete, open_log, prepare
from control_plane.drivers.forks import Forks
from control_plane.drivers.health import ERROR_LOG_LINES, HealthProbe, failure_message
from control_plane.drivers.launch import port_accepts, port_is_free
from control_plane.drivers.processes import (
    Proc,
    accepting,
    data_dir_names,
    drop_sandbox,
    group_of,
    line_on,
    measure,
    names_data_dir,
    naming,
    send,
    tail_lines,
    wait_gone,
)
from control_plane.drivers.spawning import Spawner
from control_plane.drivers.standby import Standbys
from control_plane.drivers.zygote import SERVING, Zygotes, forked_for
from control_plane.engines.base import EngineError
from control_plane.settings import Settings

log = logging.getLogger(__name__)

# A starting instance's port is tried every millisecond for its first 200 ms (a PocketBase
# starts in 20-40 ms here, and a connection attempt to a closed loopback port costs a few
# microseconds), then with a back-off up to 20 ms.
_PORT_POLL_S = 0.001
_PORT_POLL_TIGHT_FOR_S = 0.2
_PORT_POLL_MAX_S = 0.02
_STATUS_HEALTH_TIMEOUT_S = 0.5
_TASK_TIMEOUT_S = 60.0
_ROTATED_SUFFIX = ".1"


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
        self._forks = Forks(self.spawner, self.zygotes) if self.zygotes is not None else None
        self._locks: dict[str, asyncio.Lock] = {}
        self._standbys = Standbys(self.spawner, self.zygotes, self._lock)
        self._health = HealthProbe()

    async def aclose(self) -> None:
        """Close the HTTP client, drop the standbys and stop the zygotes. Running instances
        are left running."""
        await self._standbys.aclose()
        await self._health.aclose()
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
        self._standbys.stopping(spec.id)
        async with self._lock(spec):
            self._reap()
            await self._standbys.drop(spec.id)
            proc = self._own(spec, pid)
            targets = [proc] if proc is not None else await asyncio.to_thread(self._scan, spec)
            for target in targets:
                await self._end(spec, target, graceful=True)
            if not targets and not await self._end_unsandboxed(spec):
                await asyncio.to_thread(self.cgroups.drop, spec.id)

    async def asleep(self, spec: InstanceSpec) -> None:
        """The instance hibernated: make it a standby in the background, if it is forked
        into a sandbox (`standby.py`). Returns at once."""
        self._standbys.asleep(spec)

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
        healthy = health and await self._health.healthy(spec, _STATUS_HEALTH_TIMEOUT_S)
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
        return None if proc is None else await asyncio.to_thread(measure, proc)

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
        await self.stop(spec, None)  # drops its standby too
        await asyncio.to_thread(self._move_or_delete, spec, keep_at)

    def read_logs(self, spec: InstanceSpec, tail: int) -> list[str]:
        """The last `tail` lines of the log, continuing into the rotated `.1` file if short."""
        current = spec.layout.log_file
        lines = tail_lines(current, tail)
        if len(lines) < tail:
            rotated = current.with_name(current.name + _ROTATED_SUFFIX)
            lines = tail_lines(rotated, tail - len(lines)) + lines
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

    def _own(self, spec: InstanceSpec, pid: int | None) -> Proc | None:
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
                return Proc(ps, popen, True) if sandbox.is_sandbox_engine(pid, uid) else None
            cmdline = ps.cmdline()
            if not names_data_dir(cmdline, data_dir_names(spec)) and not forked_for(
                pid, cmdline, spec
            ):
                return None
        except psutil.Error:
            return None
        return Proc(ps, popen)

    def _scan(self, spec: InstanceSpec) -> list[Proc]:
        """Every live process of the instance (`_own`) whose argv names its data folder (the
        argv only narrows the search down: it proves nothing). Reads /proc."""
        return [proc for pid in naming(spec) if (proc := self._own(spec, pid)) is not None]

    def _unsandboxed(self, spec: InstanceSpec) -> list[Proc]:
        """Processes of the instance's uid outside any sandbox that name its folder: what an
        older pocketfleet (or `PF_SANDBOX=off`) left running. Only that instance runs as its
        uid, so ending them touches nobody else. Empty unless the instance is sandboxed."""
        uid = self.spawner.run_as(spec)
        if uid is None or not self.sandboxed(spec):
            return []
        found = []
        for pid in naming(spec):
            facts = sandbox.process_facts(pid)
            if facts is not None and facts.real_uid == uid and len(facts.namespace_pids) == 1:
                with contextlib.suppress(psutil.Error):
                    found.append(Proc(psutil.Process(pid), None))
        return found

    def _existing(self, spec: InstanceSpec) -> Proc | None:
        """A process already serving the instance, None if the port is free; raises
        `StartError` if another process has the port."""
        proc = self._own(spec, self._child_of.get(spec.id)) or self._own(
            spec, self._forked.get(spec.id)
        )
        if proc is not None:
            return proc
        if not accepting(spec.port) and port_is_free(spec.port):
            return None
        for candidate in self._scan(spec):
            if candidate.listens_on(spec.port):
                return candidate
        raise PortTakenError(spec.id, spec.port)

    def sandboxed(self, spec: InstanceSpec) -> bool:
        """Whether the instance's processes run in a sandbox (`Spawner.sandboxed`)."""
        return self.spawner.sandboxed(spec)

    async def _fork(self, spec: InstanceSpec, argv: list[str]) -> Proc | None:
        """The serving process forked by the engine's zygote (`forks.py`), or None when there
        is none to ask now (the caller starts it cold). Sandboxed, the child joins a sandbox
        made for it, or is the instance's standby, told to go (`standby.py`)."""
        if self._forks is None:
            return None
        path = await self._forks.path(spec)
        if path is None:
            return None
        forked = await self._standbys.use(spec, argv) or await self._forks.fork(spec, argv, path)
        if forked is None:
            return None
        if forked.holder is not None:
            self._children[forked.pid] = forked.holder
        self._forked[spec.id] = forked.pid
        try:
            return Proc(psutil.Process(forked.pid), None, forked.holder is not None, forked.ready)
        except psutil.Error:
            os.close(forked.ready)
            if forked.holder is not None and forked.sandbox_pid is not None:
                await asyncio.to_thread(drop_sandbox, forked.holder, forked.sandbox_pid)
            raise StartError(self._failure(spec, "exited at once")) from None

    def _spawn(self, spec: InstanceSpec, argv: list[str]) -> Proc:
        """Prepare the folder and start the serving process (blocking; run in a thread)."""
        sandboxed = self.sandboxed(spec)
        log_fd = open_log(spec, self.spawner.run_as(spec))
        try:
            popen, pid = self.spawner.popen(spec, argv, log_fd)
        except (OSError, subprocess.SubprocessError) as err:
            raise StartError(f"instance {spec.id}: cannot run {argv[0]}: {err}") from err
        finally:
            os.close(log_fd)
        self._children[pid] = popen
        self._child_of[spec.id] = pid
        try:
            return Proc(psutil.Process(pid), popen, sandboxed)
        except psutil.Error:
            popen.wait()
            raise StartError(
                self._failure(spec, f"exited at once with code {popen.returncode}")
            ) from None

    def _join_cgroup(self, spec: InstanceSpec, pid: int) -> None:
        """Move `pid` into the instance's cgroups (memory, pids, CPU), where cgroups work."""
        self.cgroups.join(
            spec.id,
            pid,
            memory_bytes=spec.memory_limit_mb * 1024 * 1024,
            max_processes=spec.max_processes,
            cpu_weight=spec.cpu_weight,
        )

    async def _healthy_or_kill(self, spec: InstanceSpec, proc: Proc, deadline: float) -> None:
        """A forked child (`proc.ready`): wait until it says on its pipe that it listens,
        then prove the listener is its own. Otherwise (the pipe closed, or the child said so
        and does not listen: a tenant's code may write there too): wait for
        the port to accept connections (tried every 1 ms for 200 ms, then with a back-off to
        20 ms), then GET the health URL until 200 (same back-off): no health request is
        wasted on a server that is not listening yet. On exit, timeout or cancellation kill
        the process group and raise `StartError` with the log tail."""
        began = time.monotonic()
        delay = _PORT_POLL_S
        listening = False
        try:
            if proc.ready is not None:
                said = await line_on(proc.ready, deadline - time.monotonic())
                if said == SERVING and proc.listens_on(spec.port):
                    return
                # else it died, or its own code said so before it listened: as any start
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
                if listening and await self._health.healthy(spec, min(remaining, 2.0)):
                    return
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                if time.monotonic() - began > _PORT_POLL_TIGHT_FOR_S:
                    delay = min(delay * 2, _PORT_POLL_MAX_S)
        except BaseException:
            await self._end(spec, proc, graceful=False)
            raise
        finally:
            if proc.ready is not None:
                with contextlib.suppress(OSError):
                    os.close(proc.ready)

    def _failure(self, spec: InstanceSpec, what: str) -> str:
        return failure_message(spec, what, self.read_logs(spec, ERROR_LOG_LINES))

    async def _end(self, spec: InstanceSpec, proc: Proc, *, graceful: bool) -> None:
        """End `proc` and its process group: SIGTERM and up to the stop timeout if `graceful`,
        then SIGKILL; finally drop its cgroups. A sandboxed process alone gets the SIGTERM (the
        bwrap outside it would die of it at once, while the server shuts down); then the
        sandbox goes whole: the SIGKILL of its pid 1 (the engine started cold, or the reaper of
        the sandbox a zygote's child joined) ends every process in it."""
        cgroups = cgroups_of(proc.pid)
        group = group_of(proc)
        reaper = sandbox.reaper_of(proc.pid) if proc.sandboxed else None
        if graceful:
            send(proc, None if proc.sandboxed else group, signal.SIGTERM)
            timeout = self.settings.stop_timeout_s
            if not await wait_gone(proc, timeout):
                log.warning("pid %d ignored SIGTERM for %gs; killing it", proc.pid, timeout)
        send(proc, group, signal.SIGKILL)
        if proc.sandboxed:
            send(proc, None, signal.SIGKILL)
        if reaper is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(reaper, signal.SIGKILL)
        await wait_gone(proc, 5.0)
        if proc.popen is not None:
            await asyncio.to_thread(proc.popen.wait, 5.0)
        self._reap()
        await asyncio.to_thread(self.cgroups.drop_all, [*cgroups, *self.cgroups.folders(spec.id)])

    # -- blocking helpers (run in threads) ----------------------------------------------------

    def _run_task(self, spec: InstanceSpec, argv: list[str]) -> tuple[int, str]:
        try:
            prepare(spec, self.spawner.run_as(spec), reached_by_path=True)
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
        move_or_delete(spec.layout.root, keep_at)
