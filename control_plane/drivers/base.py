"""The `Driver` seam: start, stop, observe and remove instances somewhere.

Contract, for every method: idempotent (starting a running instance or stopping a stopped one
succeeds and changes nothing), safe to call after the control plane restarted (state is passed
in, never remembered only in memory), and never blocks the event loop. Only the reconciler
calls a driver; handlers write desired state.

Where an instance is reached: `address(instance_id, node)` is the host the proxy (embedded or
Caddy) dials it at, on its own port: `127.0.0.1` for the process and docker drivers (every
instance on this machine, on loopback), the address of the node it runs on for swarm. It is
answered without I/O, from what the driver learned at the instance's last `start` or
`status` (else from `node`, the node recorded for it in the control DB, whose address
`locate` learned); `node_of` is the node the driver last saw it on, which the reconciler
records as `Instance.node`. `InstanceSpec.node` is the node its data is on (the control DB's
`Instance.node`, "" = not placed yet): a driver with nodes starts it there.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from control_plane.engines.base import Engine, InstanceLayout

LOOPBACK = "127.0.0.1"


class StartError(Exception):
    """The instance did not become healthy; `reason` says why (with the last log lines)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class InstanceSpec:
    """Everything a driver needs to run one instance; built from the control DB."""

    id: str
    name: str
    engine: Engine
    version: str
    layout: InstanceLayout
    port: int
    uid: int | None = None
    env: Mapping[str, str] = field(default_factory=dict)  # the tenant's variables
    # variables the platform sets for the engine (PF_ACTIVITY_SOCKET, ...); `env` may not
    platform_env: Mapping[str, str] = field(default_factory=dict)
    memory_limit_mb: int = 512
    max_open_files: int = 4096
    log_max_bytes: int = 1_000_000
    # Processes (threads count too) the instance's uid may have at once (RLIMIT_NPROC: every
    # instance has a uid of its own), and its share of CPU under contention (cgroup weight,
    # 1-10000, 100 = an equal share).
    max_processes: int = 256
    cpu_weight: int = 100
    # the node holding its data (`Instance.node`; "" = this machine, or not placed yet)
    node: str = ""


class PortTakenError(StartError):
    """Something that is not the instance holds its port: the caller gives the instance
    another port and starts it again (a taken port must never fail a start or a wake)."""

    def __init__(self, instance_id: str, port: int) -> None:
        super().__init__(f"instance {instance_id}: port {port} is held by another process")
        self.port = port


class RunState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Observed:
    """What a driver sees of an instance. `pid` is None when nothing runs."""

    state: RunState
    pid: int | None = None
    healthy: bool = False


@dataclass(frozen=True)
class Stats:
    memory_bytes: int
    cpu_seconds: float


class Driver(ABC):
    @abstractmethod
    async def start(self, spec: InstanceSpec) -> int:
        """Prepare the folder, start the instance, wait until healthy; return its pid.

        Raises `StartError` when it exits or is not healthy within the start timeout (and leaves
        nothing running).
        """

    @abstractmethod
    async def stop(self, spec: InstanceSpec, pid: int | None) -> None:
        """Stop it cleanly (SIGTERM, then SIGKILL after the stop timeout)."""

    @abstractmethod
    async def status(self, spec: InstanceSpec, pid: int | None, *, health: bool = True) -> Observed:
        """Whether the instance known by `pid` is running and healthy (adopting it if needed).

        With `health=False` nothing is asked of the instance itself (no request: engines may
        log every request, PocketBase does) and `healthy` is False: for periodic checks that
        only need to know whether it runs.
        """

    def seems_alive(self, pid: int) -> bool:
        """A cheap hint (a system call, no I/O) that the process `pid` this driver reported
        still runs, for steady-state passes over many running instances. True may be wrong
        for a while (a reused pid): callers still run `status` every few passes. False means
        "check with `status`". Default: False (always check)."""
        return False

    @abstractmethod
    async def stats(self, spec: InstanceSpec, pid: int | None) -> Stats | None:
        """Memory and CPU of a running instance; None when it does not run."""

    @abstractmethod
    async def run_task(
        self, spec: InstanceSpec, argv: list[str], env: Mapping[str, str] | None = None
    ) -> tuple[int, str]:
        """Run a one-off command as the instance would run (same user, folder, env), with
        `env` added to its environment (never to a command line)."""

    @abstractmethod
    async def remove(self, spec: InstanceSpec, *, keep_at: Path | None) -> None:
        """Release everything the instance holds; its folder moves to `keep_at` or is deleted."""

    @abstractmethod
    def read_logs(self, spec: InstanceSpec, tail: int) -> list[str]:
        """The last `tail` lines of the instance's output."""

    def address(self, instance_id: str, node: str = "") -> str:
        """The host the instance is dialled at (on its own port) by the proxy: where it runs
        as last seen by `start`/`status`, else on `node` (its recorded node). No I/O; a node
        whose address the driver does not know yet reads as this machine's. Default:
        127.0.0.1 (instances run on this machine, on loopback)."""
        return LOOPBACK

    def node_of(self, instance_id: str) -> str | None:
        """The node the instance was last seen placed on (`start`, `status`); None when the
        driver has no nodes or has not seen it. No I/O. Default: None."""
        return None

    async def locate(self, nodes: Collection[str]) -> None:  # noqa: B027  (optional hook)
        """Learn where instances on `nodes` (node ids recorded in the control DB) are
        dialled, so that `address` knows it before their first `status` (a restarted
        control plane publishing its routes). Never raises. Default: nothing."""

    async def asleep(self, spec: InstanceSpec) -> None:  # noqa: B027  (optional hook)
        """The instance hibernated (its engine was stopped): prepare what makes its next start
        fast, in the background (must return at once). Default: nothing."""

    def cap_log(self, spec: InstanceSpec) -> None:  # noqa: B027  (optional hook)
        """Keep the instance's output under its size cap; called periodically (blocking)."""

    async def aclose(self) -> None:  # noqa: B027  (optional hook)
        """Release what the driver holds (clients, ...). Instances keep running."""
