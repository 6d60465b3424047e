"""Spawning an instance's processes: as the instance (its uid, environment, limits, folder) and,
when it has one, in its sandbox. The process driver (`process.py`) decides what to start and
watches it; this module only starts it.

- `Spawner.popen` starts a command as the instance: in its bubblewrap sandbox when
  `sandboxed(spec)` (`sandbox.py`); else behind util-linux's `prlimit`/`setpriv` (which let
  `subprocess` spawn with vfork: a fork of the control plane for a Python `preexec_fn` took
  ~15 ms of a wake here); else with a `preexec_fn`.
- `Spawner.holder` makes a sandbox whose only process waits for a zygote's child to join it.
- `Spawner.child_env` is the instance's environment: ours, the tenant's variables minus any
  name a loader, runtime or shell interprets (`env_rules`), then the platform's.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import shutil
import subprocess
from pathlib import Path
from typing import Any

from control_plane.drivers import sandbox
from control_plane.drivers.base import InstanceSpec, StartError
from control_plane.drivers.launch import (
    address_space_limit_mb,
    limits,
    limits_argv,
    wrapped_argv,
)
from control_plane.drivers.sandbox_etc import SandboxEtc
from control_plane.env_rules import refused_env_name
from control_plane.settings import Settings

log = logging.getLogger(__name__)

CHILD_PATH = "/usr/local/bin:/usr/bin:/bin"
ACTIVITY_SOCKET_ENV = "PF_ACTIVITY_SOCKET"  # a socket the platform binds into the sandbox
HOLDER_READY_S = 5.0


class Spawner:
    """Starts an instance's processes; see the module docstring. Blocking methods: callers
    run them in threads."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.etc = SandboxEtc(settings.data_dir / "sandbox")

    def run_as(self, spec: InstanceSpec) -> int | None:
        return spec.uid if spec.uid is not None and os.geteuid() == 0 else None

    def sandboxed(self, spec: InstanceSpec) -> bool:
        """Whether the instance's processes run in a sandbox (`sandbox.py`); raises
        `StartError` when `PF_SANDBOX=on` and it cannot be built here."""
        mode = self.settings.sandbox
        if mode == "off":
            return False
        missing = sandbox.available()
        if missing is None and self.run_as(spec) is not None:
            return True
        if mode == "on":
            why = missing or "the instance has no uid of its own"
            raise StartError(f"instance {spec.id}: PF_SANDBOX=on but no sandbox here: {why}")
        return False

    def sandbox_of(self, spec: InstanceSpec) -> sandbox.Sandbox:
        uid = self.run_as(spec)
        assert uid is not None
        sockets = [
            Path(value)
            for name, value in spec.platform_env.items()
            if name == ACTIVITY_SOCKET_ENV and os.path.isabs(value)
        ]
        return sandbox.Sandbox(
            instance_id=spec.id,
            root=spec.layout.root.absolute(),
            uid=uid,
            etc=self.etc.current(),
            read_only=spec.engine.runtime_paths(spec.version),
            sockets=[path for path in sockets if path.exists()],
        )

    def child_env(self, spec: InstanceSpec) -> dict[str, str]:
        """The instance's environment: ours (PATH, HOME, ...) overridden by nothing of the
        tenant's that a loader, runtime or shell interprets (`env_rules`)."""
        env = {
            "PATH": CHILD_PATH,
            "HOME": str(spec.layout.root.absolute()),
            "LANG": "C.UTF-8",
            "GOMEMLIMIT": f"{spec.memory_limit_mb}MiB",
        }
        for name, value in spec.env.items():
            if refused_env_name(name) is None:
                env[name] = value
            else:
                log.warning("instance %s: variable %s not passed (refused name)", spec.id, name)
        env.update(spec.platform_env)
        return env

    def popen(
        self, spec: InstanceSpec, argv: list[str], stdout: int
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Spawn `argv` as the instance: own session, its uid, its env, cwd, limits (set by
        `prlimit`/`setpriv` before the exec of `argv` when they exist: `launch.wrapped_argv`),
        in its sandbox when it has one. Returns what was spawned and the pid of the
        instance's own process (inside the sandbox, or the spawned one)."""
        uid = self.run_as(spec)
        address_space = address_space_limit_mb(spec.memory_limit_mb) * 1024 * 1024
        if self.sandboxed(spec):
            return self._popen_sandboxed(spec, argv, stdout, address_space)
        wrapped = wrapped_argv(argv, spec.max_open_files, address_space, uid, spec.max_processes)
        if wrapped and shutil.which(argv[0], path=CHILD_PATH) is None:  # as Popen would say
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
        # without prlimit/setpriv: the limits and the user by a preexec_fn (a fork, slower)
        fallback: dict[str, Any] = {
            "preexec_fn": limits(spec.max_open_files, address_space),
            "user": uid,
            "group": uid,
            "extra_groups": None if uid is None else [],
        }
        popen = subprocess.Popen(
            wrapped or argv,
            cwd=spec.layout.root.absolute(),
            env=self.child_env(spec),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **({} if wrapped else fallback),
        )
        return popen, popen.pid

    def _popen_sandboxed(
        self, spec: InstanceSpec, argv: list[str], stdout: int, address_space: int
    ) -> tuple[subprocess.Popen[bytes], int]:
        """`argv` in the instance's sandbox (see `sandbox.py`): root's helpers get nothing of
        the tenant's environment, and no secret is on any command line."""
        prefix = limits_argv(spec.max_open_files, address_space, spec.max_processes)
        launch = sandbox.prepare_launch(self.sandbox_of(spec), argv, self.child_env(spec), prefix)
        try:
            popen = subprocess.Popen(
                launch.argv,
                cwd="/",
                env=sandbox.HELPER_ENV,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=launch.pass_fds,
            )
        finally:
            launch.close_parent_ends()
        pid = launch.engine_pid()
        if pid is None:
            popen.wait()
            raise OSError(f"the sandbox did not start (bwrap exited with {popen.returncode})")
        return popen, pid

    def holder(self, spec: InstanceSpec) -> tuple[subprocess.Popen[bytes], int, int]:
        """A sandbox for a zygote's child to join: its only process, `sandbox.HOLDER`, reads a
        pipe until the child (given the write end) is gone. Returns the bwrap outside, the host
        pid of the sandbox's pid 1, and the pipe's write end. Blocking."""
        address_space = address_space_limit_mb(spec.memory_limit_mb) * 1024 * 1024
        prefix = limits_argv(spec.max_open_files, address_space, spec.max_processes)
        launch = sandbox.prepare_launch(
            self.sandbox_of(spec), sandbox.HOLDER, {}, prefix, as_pid_1=False
        )
        alive_read, alive_write = os.pipe2(os.O_CLOEXEC)
        ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
        try:
            holder = subprocess.Popen(
                launch.argv,
                cwd="/",
                env=sandbox.HELPER_ENV,
                stdin=alive_read,
                stdout=ready_write,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=launch.pass_fds,
            )
        except BaseException:
            os.close(alive_write)
            os.close(ready_read)
            raise
        finally:
            os.close(alive_read)
            os.close(ready_write)
            launch.close_parent_ends()
        sandbox_pid = launch.engine_pid()
        with os.fdopen(ready_read, "rb") as ready:  # EOF if bwrap failed
            built = select.select([ready], [], [], HOLDER_READY_S)[0] and ready.readline()
        if sandbox_pid is None or built != sandbox.HOLDER_READY:
            os.close(alive_write)
            holder.kill()
            holder.wait()
            raise StartError(f"instance {spec.id}: its sandbox did not start")
        return holder, sandbox_pid, alive_write
