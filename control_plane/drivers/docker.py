"""The `docker` driver (`PF_DRIVER=docker`): every instance is one container on a Docker engine.

The engine's API is at `PF_DOCKER_HOST` (default `unix:///var/run/docker.sock`), spoken with
the `docker` SDK (synchronous: every call runs in a thread). Images are pocketfleet's own
(`docker_images.py`: the engine's static binary and CA certificates, `docker import`ed once per
version); no registry is involved.

- One container per instance, named `pf-ID-DIGEST` (DIGEST: of its folder's path, so two
  control planes sharing an engine never collide) and labelled `pocketfleet.instance=ID`,
  `pocketfleet.root=FOLDER`, `pocketfleet.role=serve`: `status` finds it by name and checks the
  labels, so a new driver object (a restarted control plane) adopts what runs. The pid this
  driver reports is the host pid of the container's first process (the engine itself).
- The container: the instance folder bind-mounted at its own absolute path (the engine gets
  every path explicitly, as with the process driver; only that folder of the host is visible,
  and its path's ancestors are root's, so no link of the tenant's can redirect the mount),
  read-only root file system with a private `/tmp` (tmpfs; runtime files the image holds
  under /tmp are bound read-only from the host over it, as the sandbox does), `cap_drop=ALL`,
  `no-new-privileges`, the instance's uid:gid (ours when we are not root) with no group
  but its own, host networking (the engine listens on 127.0.0.1:PORT), memory hard
  limit without swap, pids limit, CPU shares from `cpu_weight`, RLIMIT_NOFILE, no restart
  policy (the reconciler restarts). The environment (ours, the tenant's minus refused names,
  the platform's: `Spawner.child_env`) goes through the API, never on a command line.
- A container whose configuration (a digest label over everything above: image, argv, env,
  limits) no longer matches the spec is replaced at the next start; an unchanged one is only
  started again: hibernation stops the container and a wake starts it.
- Logs are the engine's (`json-file`, capped at `log_max_bytes` in two files); `read_logs` is
  the container's log tail. Stats come from the engine's container stats (one shot).
- `run_task` runs a one-off container with the same image, mounts, user, env and limits, and
  removes it afterwards; `remove` removes the instance's containers, then moves or deletes its
  folder as the process driver does.
- A port held by anything that is not the instance's container is a `PortTakenError` (checked
  before a start; after it, as root, the listening socket must be open in the container's own
  process: `listeners.held_by`).

Errors of the Docker engine other than "no such container" propagate (the reconciler logs
them and retries): an unreachable engine never reads as "stopped".
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from control_plane.drivers.base import (
    Driver,
    InstanceSpec,
    Observed,
    PortTakenError,
    RunState,
    StartError,
    Stats,
)
from control_plane.drivers.docker_images import EngineImages, ImageError
from control_plane.drivers.folders import move_or_delete, prepare
from control_plane.drivers.health import ERROR_LOG_LINES, HealthProbe, failure_message
from control_plane.drivers.launch import open_files_limit, port_accepts, port_is_free
from control_plane.drivers.listeners import held_by
from control_plane.drivers.spawning import ACTIVITY_SOCKET_ENV, Spawner
from control_plane.engines.base import EngineError
from control_plane.settings import Settings

log = logging.getLogger(__name__)

LABEL_INSTANCE = "pocketfleet.instance"
LABEL_ROOT = "pocketfleet.root"
LABEL_ROLE = "pocketfleet.role"
LABEL_CONFIG = "pocketfleet.config"
_PORT_POLL_S = 0.001
_PORT_POLL_TIGHT_FOR_S = 0.2
_PORT_POLL_MAX_S = 0.02
_INSPECT_EVERY_S = 0.02
_STATUS_HEALTH_TIMEOUT_S = 0.5
_TASK_TIMEOUT_S = 60
_TMP = "/tmp"
_TMP_SIZE = "64m"
_API_TIMEOUT_S = 60


def _digest(text: str, chars: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:chars]


def container_name(spec: InstanceSpec) -> str:
    """`pf-ID-DIGEST`, DIGEST of the instance folder's absolute path."""
    return f"pf-{spec.id}-{_digest(str(spec.layout.root.absolute()), 8)}"


def _state(info: Mapping[str, Any]) -> Mapping[str, Any]:
    state: Mapping[str, Any] = info.get("State") or {}
    return state


def _running(info: Mapping[str, Any] | None) -> bool:
    return info is not None and bool(_state(info).get("Running"))


class DockerDriver(Driver):
    """Instances as containers on one Docker engine. See the module docstring."""

    def __init__(self, settings: Settings, client: docker.APIClient | None = None) -> None:
        self.settings = settings
        self.spawner = Spawner(settings)  # the instance's uid and environment, as processes
        self._client = client
        self._images: EngineImages | None = None
        self._client_lock = threading.Lock()
        self._locks: dict[str, asyncio.Lock] = {}
        self._health = HealthProbe()

    # -- the engine's API ---------------------------------------------------------------------

    def api(self) -> docker.APIClient:
        """The Docker engine's client, made at first use (it asks the engine its API version).
        Blocking."""
        with self._client_lock:
            if self._client is None:
                try:
                    self._client = docker.APIClient(
                        base_url=self.settings.docker_host,
                        version="auto",
                        timeout=_API_TIMEOUT_S,
                    )
                except docker.errors.DockerException as err:
                    raise StartError(
                        f"the Docker engine at {self.settings.docker_host} does not answer: {err}"
                    ) from err
            return self._client

    def images(self) -> EngineImages:
        client = self.api()
        with self._client_lock:
            if self._images is None:
                self._images = EngineImages(client, self.settings.data_dir / "images")
            return self._images

    def _inspect(self, spec: InstanceSpec) -> dict[str, Any] | None:
        """The instance's serving container, None if there is none. A container of that name
        that is not the instance's is refused (`StartError`). Blocking."""
        try:
            info: dict[str, Any] = self.api().inspect_container(container_name(spec))
        except docker.errors.NotFound:
            return None
        labels = (info.get("Config") or {}).get("Labels") or {}
        if labels.get(LABEL_INSTANCE) != spec.id or labels.get(LABEL_ROOT) != str(
            spec.layout.root.absolute()
        ):
            raise StartError(
                f"instance {spec.id}: container {container_name(spec)} exists and is not its own"
            )
        return info

    async def aclose(self) -> None:
        """Close the HTTP and Docker clients. Containers keep running."""
        await self._health.aclose()
        with self._client_lock:
            client, self._client, self._images = self._client, None, None
        if client is not None:
            await asyncio.to_thread(client.close)

    # -- the Driver contract ------------------------------------------------------------------

    async def start(self, spec: InstanceSpec) -> int:
        """Adopt the instance's running container, or start its stopped one (replaced first
        when its configuration changed), or create it; wait until healthy; return its pid.
        On failure the container is stopped (kept, for its logs) and `StartError` raised."""
        async with self._lock(spec):
            began = time.monotonic()
            deadline = began + self.settings.start_timeout_s
            info = await asyncio.to_thread(self._inspect, spec)
            how = "adopted"
            if not _running(info):
                how = "started" if info is not None else "created"
                try:
                    info = await asyncio.to_thread(self._launch, spec, info)
                except docker.errors.APIError as err:  # the engine refused: say why
                    why = f"instance {spec.id}: the Docker engine refused: {err.explanation or err}"
                    raise StartError(why) from err
            assert info is not None
            pid = int(_state(info).get("Pid") or 0)
            running_ms = (time.monotonic() - began) * 1000
            await self._healthy_or_stop(spec, pid, deadline)
            log.info(
                "instance %s: container %s, pid %d healthy in %.1f ms (running after %.1f ms)",
                spec.id,
                how,
                pid,
                (time.monotonic() - began) * 1000,
                running_ms,
            )
            return pid

    async def stop(self, spec: InstanceSpec, pid: int | None) -> None:
        """Stop the container (SIGTERM, SIGKILL after `stop_timeout_s`); idempotent."""
        async with self._lock(spec):
            await asyncio.to_thread(self._stop, spec)

    async def status(self, spec: InstanceSpec, pid: int | None, *, health: bool = True) -> Observed:
        """RUNNING with the container's pid (and one quick health probe unless
        `health=False`) while the instance's container runs; else STOPPED."""
        info = await asyncio.to_thread(self._inspect, spec)
        if info is None or not _running(info):
            return Observed(RunState.STOPPED)
        healthy = health and await self._probe(spec, _STATUS_HEALTH_TIMEOUT_S)
        return Observed(RunState.RUNNING, int(_state(info).get("Pid") or 0) or None, healthy)

    def seems_alive(self, pid: int) -> bool:
        """The container's first process exists (a hint: `status` is still run now and then)."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    async def stats(self, spec: InstanceSpec, pid: int | None) -> Stats | None:
        """Memory (usage less page cache) and CPU seconds from the container's stats."""
        return await asyncio.to_thread(self._stats, spec)

    async def run_task(
        self, spec: InstanceSpec, argv: list[str], env: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """Run `argv` in a one-off container like the instance's (image, folder, user, env,
        limits), with `env` added as the platform's; 60 s timeout; the container is removed.
        Returns the exit code and its output; 127 when it cannot be run at all."""
        return await asyncio.to_thread(self._run_task, spec, argv, dict(env or {}))

    async def remove(self, spec: InstanceSpec, *, keep_at: Path | None) -> None:
        """Remove the instance's containers, then move its folder to `keep_at` (parents
        created; `.N` added if it exists) or delete it. Idempotent."""
        async with self._lock(spec):
            await asyncio.to_thread(self._remove_containers, spec)
            await asyncio.to_thread(move_or_delete, spec.layout.root, keep_at)

    def read_logs(self, spec: InstanceSpec, tail: int) -> list[str]:
        """The last `tail` lines the container printed (stdout and stderr)."""
        if tail <= 0:
            return []
        try:
            raw = self.api().logs(container_name(spec), tail=tail)
        except (docker.errors.DockerException, requests.exceptions.RequestException, StartError):
            return []  # no container (or no engine to ask): nothing to show
        text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)
        return text.splitlines()[-tail:]

    # -- containers (blocking: run in threads) ------------------------------------------------

    def _lock(self, spec: InstanceSpec) -> asyncio.Lock:
        return self._locks.setdefault(spec.id, asyncio.Lock())

    def _image(self, spec: InstanceSpec) -> str:
        try:
            return self.images().ensure(spec.engine, spec.version)
        except (ImageError, EngineError) as err:
            raise StartError(f"instance {spec.id}: no image for it: {err}") from err

    def _user(self, spec: InstanceSpec) -> str:
        """`UID:GID` the instance's processes run as: its own uid, or ours when not root."""
        uid = self.spawner.run_as(spec)
        return f"{uid}:{uid}" if uid is not None else f"{os.geteuid()}:{os.getegid()}"

    def _binds(self, spec: InstanceSpec) -> dict[str, str]:
        """Host paths bound at their own path in the instance's containers, with their mode
        (`rw`/`ro`): its folder, runtime files under the private /tmp, the activity socket."""
        root = str(spec.layout.root.absolute())
        binds = {root: "rw"}
        for path in spec.engine.runtime_paths(spec.version):
            runtime = os.path.abspath(path)
            if Path(runtime).is_relative_to(_TMP):  # the image's copy is under the private /tmp
                binds[runtime] = "ro"
        socket = spec.platform_env.get(ACTIVITY_SOCKET_ENV)
        if socket and os.path.isabs(socket) and os.path.exists(socket):
            binds[socket] = "rw"
        return binds

    def _container_config(
        self,
        spec: InstanceSpec,
        image: str,
        argv: list[str],
        role: str,
        env: Mapping[str, str],
    ) -> dict[str, Any]:
        """The `create_container` arguments of a container of the instance (`role`: serve or
        task), with the digest of everything in it as a label."""
        user = self._user(spec)
        root = str(spec.layout.root.absolute())
        binds: dict[str, Mapping[str, str]] = {
            path: {"bind": path, "mode": mode} for path, mode in self._binds(spec).items()
        }
        memory = spec.memory_limit_mb * 1024 * 1024
        nofile = open_files_limit(spec.max_open_files)
        host_config = self.api().create_host_config(
            binds=binds,
            network_mode="host",
            read_only=True,
            tmpfs={_TMP: f"rw,nosuid,nodev,noexec,size={_TMP_SIZE},mode=1777"},
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            mem_limit=memory,
            memswap_limit=memory,
            pids_limit=spec.max_processes,
            cpu_shares=max(2, spec.cpu_weight * 1024 // 100),
            ulimits=[docker.types.Ulimit(name="nofile", soft=nofile, hard=nofile)],
            log_config=docker.types.LogConfig(
                type="json-file",
                config={"max-size": str(max(spec.log_max_bytes // 2, 4096)), "max-file": "2"},
            ),
            restart_policy={"Name": "no"},
            ipc_mode="private",
        )
        config: dict[str, Any] = {
            "image": image,
            "command": argv,
            "user": user,
            "environment": dict(env),
            "working_dir": root,
            "host_config": host_config,
            "labels": {LABEL_INSTANCE: spec.id, LABEL_ROOT: root, LABEL_ROLE: role},
        }
        config["labels"][LABEL_CONFIG] = _digest(json.dumps(config, sort_keys=True), 32)
        return config

    def _launch(self, spec: InstanceSpec, info: dict[str, Any] | None) -> dict[str, Any]:
        """Start the stopped container `info` (replacing it first when its configuration is
        not the spec's), or create one; return its inspection once it runs."""
        image = self._image(spec)
        self._prepare(spec)
        try:
            argv = spec.engine.serve_command(spec.version, spec.layout, spec.port)
        except EngineError as err:
            raise StartError(f"instance {spec.id}: {err}") from err
        config = self._container_config(spec, image, argv, "serve", self.spawner.child_env(spec))
        name = container_name(spec)
        client = self.api()
        if info is not None:
            labels = (info.get("Config") or {}).get("Labels") or {}
            if labels.get(LABEL_CONFIG) != config["labels"][LABEL_CONFIG]:
                log.info("instance %s: its container's configuration changed; replacing it", name)
                client.remove_container(name, force=True)
                info = None
        if not port_is_free(spec.port):
            raise PortTakenError(spec.id, spec.port)
        if info is None:
            client.create_container(name=name, detach=True, **config)
        try:
            client.start(name)
        except docker.errors.APIError as err:
            raise StartError(f"instance {spec.id}: its container did not start: {err}") from err
        started: dict[str, Any] = client.inspect_container(name)
        return started

    def _stop(self, spec: InstanceSpec) -> None:
        info = self._inspect(spec)
        if not _running(info):
            return
        timeout = max(1, math.ceil(self.settings.stop_timeout_s))
        with contextlib.suppress(docker.errors.NotFound):
            self.api().stop(container_name(spec), timeout=timeout)

    def _kill(self, spec: InstanceSpec) -> None:
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            self.api().kill(container_name(spec))

    def _stats(self, spec: InstanceSpec) -> Stats | None:
        info = self._inspect(spec)
        if not _running(info):
            return None
        try:
            raw: dict[str, Any] = self.api().stats(
                container_name(spec), stream=False, one_shot=True
            )
        except docker.errors.NotFound:
            return None
        return stats_of(raw)

    def _run_task(
        self, spec: InstanceSpec, argv: list[str], extra_env: dict[str, str]
    ) -> tuple[int, str]:
        try:
            image = self._image(spec)
            self._prepare(spec)
        except StartError as err:
            return 127, err.reason
        env = {**self.spawner.child_env(spec), **extra_env}
        config = self._container_config(spec, image, argv, "task", env)
        name = f"{container_name(spec)}-task-{secrets.token_hex(4)}"
        client = self.api()
        try:
            client.create_container(name=name, detach=True, **config)
        except docker.errors.APIError as err:
            return 127, f"cannot run {argv[0]}: {err.explanation or err}"
        try:
            try:
                client.start(name)
            except docker.errors.APIError as err:
                return 127, f"cannot run {argv[0]}: {err.explanation or err}"
            note = ""
            try:
                code = int(client.wait(name, timeout=_TASK_TIMEOUT_S)["StatusCode"])
            except requests.exceptions.RequestException:  # the wait timed out
                client.kill(name)
                code = int(client.wait(name, timeout=_API_TIMEOUT_S)["StatusCode"])
                note = f"\n[killed after {_TASK_TIMEOUT_S}s]"
            output = client.logs(name).decode("utf-8", errors="replace")
            return code, output + note
        finally:
            with contextlib.suppress(docker.errors.NotFound):
                client.remove_container(name, force=True)

    def _remove_containers(self, spec: InstanceSpec) -> None:
        client = self.api()
        labels = [f"{LABEL_INSTANCE}={spec.id}", f"{LABEL_ROOT}={spec.layout.root.absolute()}"]
        found = client.containers(all=True, filters={"label": labels})
        for container in found:
            with contextlib.suppress(docker.errors.NotFound):
                if (container.get("State") or "") == "running":
                    timeout = max(1, math.ceil(self.settings.stop_timeout_s))
                    client.stop(container["Id"], timeout=timeout)
                client.remove_container(container["Id"], force=True)

    # -- the folder ---------------------------------------------------------------------------

    def _prepare(self, spec: InstanceSpec) -> int | None:
        """Create the instance's folder (`folders.prepare`: bind-mounted, so its ancestors
        need not let the uid through); return the uid it belongs to (None: ours)."""
        uid = self.spawner.run_as(spec)
        prepare(spec, uid, reached_by_path=False)
        return uid

    # -- health -------------------------------------------------------------------------------

    async def _healthy_or_stop(self, spec: InstanceSpec, pid: int, deadline: float) -> None:
        """Wait for the port to accept (1 ms polls for 200 ms, then a back-off to 20 ms), prove
        the listener is the container's (as root), then GET the health path until 200; the
        container's state is checked every 20 ms meanwhile. On exit, timeout or cancellation
        the container is killed and `StartError` raised with its last log lines."""
        began = last_inspect = time.monotonic()
        delay = _PORT_POLL_S
        listening = False
        try:
            while True:
                now = time.monotonic()
                if now - last_inspect >= _INSPECT_EVERY_S:
                    last_inspect = now
                    info = await asyncio.to_thread(self._inspect, spec)
                    if not _running(info):
                        code = _state(info).get("ExitCode") if info is not None else None
                        how = "exited" if code is None else f"exited with code {code}"
                        raise StartError(await self._failure(spec, f"{how} before it was healthy"))
                remaining = deadline - now
                if remaining <= 0:
                    timeout = self.settings.start_timeout_s
                    why = f"was not healthy after {timeout:g}s"
                    raise StartError(await self._failure(spec, why))
                if not listening and await self._listening(spec, pid):
                    listening = True
                if listening and await self._probe(spec, min(remaining, 2.0)):
                    return
                await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                if time.monotonic() - began > _PORT_POLL_TIGHT_FOR_S:
                    delay = min(delay * 2, _PORT_POLL_MAX_S)
        except BaseException:
            await asyncio.shield(asyncio.to_thread(self._kill, spec))
            raise

    async def _listening(self, spec: InstanceSpec, pid: int) -> bool:
        """Whether the instance's port accepts; as root, a listener that is not process `pid`'s
        is a `PortTakenError`."""
        if not await port_accepts(spec.port):
            return False
        if os.geteuid() == 0 and not await asyncio.to_thread(held_by, pid, spec.port):
            raise PortTakenError(spec.id, spec.port)
        return True

    async def _failure(self, spec: InstanceSpec, what: str) -> str:
        lines = await asyncio.to_thread(self.read_logs, spec, ERROR_LOG_LINES)
        return failure_message(spec, what, lines)

    async def _probe(self, spec: InstanceSpec, timeout: float) -> bool:
        """One GET of the engine's health path; True on 200."""
        return await self._health.healthy(spec, timeout)


def stats_of(raw: Mapping[str, Any]) -> Stats:
    """`Stats` from a container's one-shot stats: memory less page cache, CPU seconds."""
    memory = raw.get("memory_stats") or {}
    usage = int(memory.get("usage") or 0)
    details = memory.get("stats") or {}
    cache = details.get("inactive_file", details.get("total_inactive_file", 0))
    cpu = ((raw.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage") or 0
    return Stats(memory_bytes=max(0, usage - int(cache)), cpu_seconds=int(cpu) / 1e9)
