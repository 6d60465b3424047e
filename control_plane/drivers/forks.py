"""Forked starts: the process driver's serving process asked of the engine's zygote.

`zygote.py` runs the zygotes and decides which path an instance takes (`fork_path`); this
module is the driver's side of one forked start:

- `Forks.path` is the instance's fork path, or None when it starts cold (the zygote is off,
  the engine has none, or `fork_path` says its child could not read the runtime).
- `Forks.fork` asks the zygote for the child (`fork_request`: argv, folder, environment, log,
  uid and limits) and returns it as `Forked`, or None when there is no zygote to ask now (the
  first start of an engine version starts its zygote in the background and goes cold). The
  child gets the write end of a readiness pipe (`ready`) on which it says when it listens
  (`zygote.SERVING`); the caller waits on the read end, which it then owns. Sandboxed, the
  child joins a sandbox made for it (`Spawner.holder`), whose bwrap is `Forked.holder`; if the
  zygote does not fork, that sandbox is ended here.

A standby (`standby.py`) is a forked child made ahead of a wake; the driver asks for one
before it forks anew.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from dataclasses import dataclass

from control_plane.drivers.base import InstanceSpec
from control_plane.drivers.folders import open_log
from control_plane.drivers.launch import address_space_limit_mb, open_files_limit
from control_plane.drivers.processes import drop_sandbox
from control_plane.drivers.spawning import Spawner
from control_plane.drivers.zygote import ForkPath, Zygotes, fork_path


def zygote_key(spec: InstanceSpec) -> str:
    """The name of the zygote that forks the instance's children (one per engine version)."""
    return f"{spec.engine.name}-{spec.version}"


def fork_request(
    spawner: Spawner, spec: InstanceSpec, argv: list[str], uid: int | None
) -> dict[str, object]:
    """What the zygote is asked to fork for the instance (`instance_runtime.zygote`)."""
    return {
        "argv": argv,
        "cwd": str(spec.layout.root.absolute()),
        "env": spawner.child_env(spec),
        "log": str(spec.layout.log_file.absolute()),
        "uid": uid,
        "nofile": open_files_limit(spec.max_open_files),
        "address_space": address_space_limit_mb(spec.memory_limit_mb) * 1024 * 1024,
    }


@dataclass(frozen=True)
class Forked:
    """A zygote's child serving the instance: its pid, the bwrap outside the sandbox it
    joined and that sandbox's pid 1 (both None unsandboxed), and the read end of its
    readiness pipe (the receiver closes it)."""

    pid: int
    holder: subprocess.Popen[bytes] | None
    sandbox_pid: int | None
    ready: int


class Forks:
    """The driver's forked starts (see the module docstring)."""

    def __init__(self, spawner: Spawner, zygotes: Zygotes) -> None:
        self.spawner = spawner
        self.zygotes = zygotes

    async def path(self, spec: InstanceSpec) -> ForkPath | None:
        """The instance's fork path if it is forked, else None (it starts cold)."""
        if spec.engine.zygote_command(spec.version) is None:
            return None
        if self.spawner.sandboxed(spec):  # (no I/O on this path)
            path = fork_path(spec.engine, spec.version, zygote=True, own_uid=True, sandboxed=True)
        else:
            path = await asyncio.to_thread(
                fork_path,
                spec.engine,
                spec.version,
                zygote=True,
                own_uid=self.spawner.run_as(spec) is not None,
                sandboxed=False,
            )
        return path if path.forked else None

    async def fork(self, spec: InstanceSpec, argv: list[str], path: ForkPath) -> Forked | None:
        """The serving process forked by the engine's zygote, or None when there is none to
        ask now (the caller starts it cold)."""
        command = spec.engine.zygote_command(spec.version)
        key = zygote_key(spec)
        if command is None:
            return None
        if not self.zygotes.running(key):
            await self.zygotes.spawn(key, command, {})  # starts it, for the next start
            return None
        uid = self.spawner.run_as(spec)
        os.close(await asyncio.to_thread(open_log, spec, uid))
        request = fork_request(self.spawner, spec, argv, uid)
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        try:
            if not self.spawner.sandboxed(spec):
                if path.covers:  # the child's uid cannot enter where the runtime lives
                    request["show"] = [cover.request() for cover in path.covers]
                request["pass"] = ["ready"]
                pid = await self.zygotes.spawn(key, command, request, fds=[ready_write])
                if pid is None:
                    os.close(ready_read)
                    return None
                return Forked(pid, None, None, ready_read)
            holder, sandbox_pid, alive_fd = await asyncio.to_thread(self.spawner.holder, spec)
            request.update(join=sandbox_pid, nproc=spec.max_processes, no_new_privs=True)
            request["pass"] = ["hold", "ready"]
            try:
                pid = await self.zygotes.spawn(key, command, request, fds=[alive_fd, ready_write])
            finally:
                os.close(alive_fd)  # the child holds it now: the holder ends when it does
        finally:
            os.close(ready_write)
        if pid is None:
            os.close(ready_read)
            await asyncio.to_thread(drop_sandbox, holder, sandbox_pid)
            return None
        return Forked(pid, holder, sandbox_pid, ready_read)
