"""Standbys: what makes the wake of a hibernated, sandboxed instance a few milliseconds.

A standby is a sandbox of the instance's own holding a zygote's child (`forks.py`) that has
already become the instance's process (its uid, limits, folder, log) and waits, parked, for
its go before it runs anything of the instance (`instance_runtime.zygote`, `go`). Contract of
`Standbys`, the process driver's pool of them (one at most per instance):

- Built: when the instance hibernates (`asleep`), in the background, under the instance's
  lock, if its engine has a zygote that runs now, it is sandboxed, its folder exists, and it
  was not stopped again since hibernation asked (a later stop wins). An older standby of the
  instance is dropped first. Built means parked: the child said `zygote.PARKED` on its
  readiness pipe within `_PARK_TIMEOUT_S`, else it is thrown away (failures only log).
- Used: by the instance's next start (`use`, taking it out of the pool), only if it is still
  what a fork now would be: made for the same request (command, variables, limits: `key`) and
  the same sandbox (`Sandbox`), its sandbox alive, its child still the first process of a
  sandbox running as the instance's uid, and the instance's folder still the very folder it
  was bound on (a restore swaps folders), also as its child's working folder. Then it gets its
  go and the start waits for it to say it listens, as for any fork; otherwise it is thrown
  away and the start forks anew.
- Thrown away: by any stop or removal of the instance (`stopping` + `drop`), by a start that
  cannot use it, when the pool is full (at most `STANDBY_MAX`: the oldest goes), and all of
  them by `aclose`. They die with the control plane anyway: the go pipe's write end is ours
  (EOF, and the parked child exits) and the sandbox's holder goes with its child.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from control_plane.drivers import sandbox
from control_plane.drivers.base import InstanceSpec, StartError
from control_plane.drivers.forks import Forked, fork_request, zygote_key
from control_plane.drivers.processes import drop_sandbox, folder_id, line_on
from control_plane.drivers.spawning import Spawner
from control_plane.drivers.zygote import PARKED, Zygotes
from control_plane.engines.base import EngineError

log = logging.getLogger(__name__)

STANDBY_MAX = 64  # standbys kept at once (each: a parked fork and its sandbox's processes)
_PARK_TIMEOUT_S = 10.0


@dataclass
class Standby:
    """A sandbox holding a zygote's child that has become the instance's process and waits
    for its go (see the module docstring)."""

    key: str  # the request and sandbox it was made for: a start with other ones drops it
    holder: subprocess.Popen[bytes]  # the bwrap outside the sandbox
    sandbox_pid: int
    pid: int
    go: int  # the go pipe's write end (-1 once closed)
    ready: int  # the readiness pipe's read end (-1 once closed or handed over)
    folder: tuple[int, int]  # (device, inode) of the instance's folder it was bound on

    def drop(self) -> None:
        """End it (blocking a moment: the sandbox's bwrap is reaped)."""
        for fd in (self.go, self.ready):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.go = self.ready = -1
        drop_sandbox(self.holder, self.sandbox_pid)


class Standbys:
    """The process driver's standbys, oldest first (see the module docstring). `lock` is the
    driver's per-instance lock, under which a standby is built."""

    def __init__(
        self,
        spawner: Spawner,
        zygotes: Zygotes | None,
        lock: Callable[[InstanceSpec], asyncio.Lock],
    ) -> None:
        self.spawner = spawner
        self.zygotes = zygotes
        self._lock = lock
        self._standbys: dict[str, Standby] = {}  # instance id -> its standby, oldest first
        self._stops: dict[str, int] = {}  # instance id -> stops so far (a standby asked for
        # before a later stop is not made)
        self._tasks: set[asyncio.Task[None]] = set()

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._standbys

    def __getitem__(self, instance_id: str) -> Standby:
        return self._standbys[instance_id]

    def __len__(self) -> int:
        return len(self._standbys)

    def get(self, instance_id: str) -> Standby | None:
        return self._standbys.get(instance_id)

    def key(self, spec: InstanceSpec, argv: list[str]) -> str:
        """What a standby of the instance is made for: the request and the sandbox."""
        request = fork_request(self.spawner, spec, argv, self.spawner.run_as(spec))
        made_for = {"request": request, "sandbox": repr(self.spawner.sandbox_of(spec))}
        return json.dumps(made_for, sort_keys=True) + f" nproc={spec.max_processes}"

    def asleep(self, spec: InstanceSpec) -> None:
        """The instance hibernated: build its standby in the background. Returns at once."""
        if self.zygotes is None or spec.engine.zygote_command(spec.version) is None:
            return
        stops = self._stops.get(spec.id, 0)
        task = asyncio.create_task(self._build_for(spec, stops), name=f"standby {spec.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stopping(self, instance_id: str) -> None:
        """The instance is being stopped (before its lock is taken): a standby asked for
        earlier is not built."""
        self._stops[instance_id] = self._stops.get(instance_id, 0) + 1

    async def drop(self, instance_id: str) -> None:
        """Throw away the instance's standby, if it has one."""
        standby = self._standbys.pop(instance_id, None)
        if standby is not None:
            await asyncio.to_thread(standby.drop)

    async def use(self, spec: InstanceSpec, argv: list[str]) -> Forked | None:
        """Take the instance's standby and tell it to serve `argv`, if it is still what a fork
        now would be; else throw it away and return None. The caller owns what it returns
        (the readiness pipe's read end, the sandbox)."""
        standby = self._standbys.pop(spec.id, None)
        if standby is None:
            return None
        uid = self.spawner.run_as(spec)
        try:
            usable = (
                uid is not None
                and standby.holder.poll() is None
                and standby.key == self.key(spec, argv)
                and standby.folder == folder_id(spec.layout.root.absolute())
                and folder_id(f"/proc/{standby.pid}/cwd") == standby.folder
                and sandbox.is_sandbox_engine(standby.pid, uid)
            )
            if usable:
                os.write(standby.go, b"go\n")
        except (OSError, StartError):
            usable = False
        with contextlib.suppress(OSError):
            os.close(standby.go)
        standby.go = -1
        if not usable:
            await asyncio.to_thread(standby.drop)
            return None
        return Forked(standby.pid, standby.holder, standby.sandbox_pid, standby.ready)

    async def aclose(self) -> None:
        """Stop building standbys and throw all of them away."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        standbys = list(self._standbys.values())
        self._standbys.clear()
        for standby in standbys:
            await asyncio.to_thread(standby.drop)

    async def _build_for(self, spec: InstanceSpec, stops: int) -> None:
        """Build the instance's standby unless it was stopped again since `stops`; failures
        only log."""
        try:
            async with self._lock(spec):
                if self._stops.get(spec.id, 0) == stops:
                    await self._build(spec)
        except (StartError, OSError, EngineError) as err:
            log.info("instance %s: no standby: %s", spec.id, err)

    async def _build(self, spec: InstanceSpec) -> None:
        command = spec.engine.zygote_command(spec.version)
        key = zygote_key(spec)
        folder = folder_id(spec.layout.root.absolute())
        if (
            command is None
            or self.zygotes is None
            or not self.zygotes.running(key)
            or not self.spawner.sandboxed(spec)
            or folder is None  # (removed meanwhile: never made again here)
        ):
            return
        await self.drop(spec.id)
        while len(self._standbys) >= STANDBY_MAX:
            await self.drop(next(iter(self._standbys)))
        argv = spec.engine.serve_command(spec.version, spec.layout, spec.port)
        made_for = self.key(spec, argv)
        request = fork_request(self.spawner, spec, argv, self.spawner.run_as(spec))
        holder, sandbox_pid, alive_fd = await asyncio.to_thread(self.spawner.holder, spec)
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        go_read, go_write = os.pipe2(os.O_CLOEXEC)
        request.update(join=sandbox_pid, nproc=spec.max_processes, no_new_privs=True)
        request["pass"] = ["hold", "ready", "go"]
        try:
            pid = await self.zygotes.spawn(
                key, command, request, fds=[alive_fd, ready_write, go_read]
            )
        finally:
            for fd in (alive_fd, ready_write, go_read):
                os.close(fd)
        standby = Standby(made_for, holder, sandbox_pid, pid or 0, go_write, ready_read, folder)
        if pid is None or await line_on(ready_read, _PARK_TIMEOUT_S) != PARKED:
            await asyncio.to_thread(standby.drop)
            raise StartError(f"instance {spec.id}: the standby did not park")
        self._standbys[spec.id] = standby
