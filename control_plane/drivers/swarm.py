"""The `swarm` driver (`PF_DRIVER=swarm`): every instance is one Docker Swarm service.

The control plane talks only to a Swarm manager's API (`PF_DOCKER_HOST`, the docker SDK); the
Swarm starts, stops and reports the tasks. It is the `docker` driver (`docker.py`: the same
image, folder preparation, user, environment, bind mounts, health checks and one-off tasks)
with a service where that one has a container:

- One service per instance, named like the docker driver's container (`pf-ID-DIGEST`) and
  labelled `pocketfleet.instance=ID`, `pocketfleet.root=FOLDER`, `pocketfleet.role=serve` and
  `pocketfleet.placed-on=NODE`: `status` finds it by name and checks the labels, so a new
  driver object (a restarted control plane) adopts it. Mode `replicated`, 1 replica while it
  runs; hibernation scales it to 0 and a wake back to 1 (the service and its placement stay).
  A stop also stops the task's container itself when it is on the manager's engine: Swarm's
  agent waits 2 s (a fixed delay of the engine) before it stops a task.
- Placement: a constraint `node.id==NODE`, NODE the node holding the instance's data: the
  control DB's (`spec.node`), else the one recorded on an existing service, else
  `PF_SWARM_NODE`, else the ready, active node with pocketfleet's label
  (`pocketfleet.node=true`) with the most free memory (`control_plane.nodes.placement`),
  else (no node labelled) the manager's own node.
- The task: the image by its id (`sha256:...`: the Swarm agent pulls nothing, no registry is
  involved), host networking (the `host` network: the engine listens on ADDRESS:PORT,
  ADDRESS being `PF_SWARM_INSTANCE_ADDRESS`, 127.0.0.1, on the manager's own node, and the
  node's address in the swarm on the others), the instance folder bind-mounted at its own
  path (`type: bind`), a tmpfs `/tmp` (64 MB, 1777), read-only root file system,
  `CapabilityDrop: ALL`, the instance's uid:gid, memory limit, pids limit, RLIMIT_NOFILE
  (`Ulimits`, API 1.41),
  `json-file` logs capped like the docker driver's, restart policy `any` after 2 s (Swarm
  restarts a task that died; `none` cannot be used: a slot whose task ended with `none` is
  never filled again, not even by scaling 0 -> 1; a start that fails scales to 0, so a
  broken instance does not loop), stop grace period = `stop_timeout_s`.
- What Swarm (engine API 1.41, Debian's docker.io 20.10) cannot set on a service, unlike the
  docker driver's containers: `no-new-privileges` (no `Privileges.NoNewPrivileges` before API
  1.46; with every capability dropped from the bounding set a set-uid file still gains
  nothing), a swap limit (memory+swap is left to the engine's default), CPU shares (only hard
  `NanoCPUs` limits exist: none is set, `cpu_weight` is not enforced), and `nosuid,nodev,
  noexec` on the tmpfs (only its size and mode).
- `status`: RUNNING with the task's container pid while the newest task that should run
  runs; a task still being scheduled, started or restarted by Swarm reads RUNNING unhealthy
  without a pid (never "stopped": that would start it twice; `start` waits for it); else
  STOPPED.
- Other nodes: an instance there listens on its node's address in the swarm and the driver
  dials it there (health, status); its listener is not proven the task's (that needs the
  node's own kernel), and stopping it waits for Swarm's agent (about 3 s). `read_logs` works
  for every node (the service's logs, through the manager); `run_task` (a container on the
  manager's engine, which must hold the instance's folder), `stats` and `seems_alive` are
  still of the manager's node only. The image is loaded into the node's engine before a
  service is pinned there (`swarm_images`: `docker save | docker load` from the manager's
  engine to the one `PF_SWARM_NODE_ENGINES` names; the id is kept).
- Where an instance is dialled (`address`): the address of the node its service is pinned to,
  learned at `start`/`status` (or by `locate` for the node recorded in the control DB); the
  node is `spec.node` when set (the control DB's `Instance.node`: a move changes it, and the
  next start of the stopped service re-pins it there), else the one on its service.

Errors of the manager other than "no such service" propagate (never read as "stopped").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Collection, Mapping
from typing import Any

import docker
import docker.errors
import docker.types
import requests.exceptions

from control_plane.drivers.base import InstanceSpec, Observed, PortTakenError, RunState, StartError
from control_plane.drivers.docker import (
    LABEL_INSTANCE,
    LABEL_ROLE,
    LABEL_ROOT,
    DockerDriver,
    container_name,
    stats_of,
)
from control_plane.drivers.launch import open_files_limit, port_is_free
from control_plane.drivers.swarm_images import NodeImages
from control_plane.engines.base import EngineError
from control_plane.nodes import swarm as swarm_nodes
from control_plane.nodes.placement import choose
from control_plane.settings import Settings

log = logging.getLogger(__name__)

LABEL_NODE = swarm_nodes.PLACED_ON_LABEL
_PENDING = {"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"}
_WANTED = {"running", "ready"}  # `ready`: a restart Swarm made, waiting for its delay
_POLL_S = 0.01
_TMP = "/tmp"
_TMP_BYTES = 64 << 20
_STATUS_HEALTH_TIMEOUT_S = 0.5
_REMOVE_TIMEOUT_S = 30.0
_RESTART_DELAY_NS = 2_000_000_000
_RequestError = requests.exceptions.RequestException


def _replicas(service: Mapping[str, Any]) -> int:
    mode = (service.get("Spec") or {}).get("Mode") or {}
    return int((mode.get("Replicated") or {}).get("Replicas") or 0)


def _newest(tasks: list[dict[str, Any]], exclude: frozenset[str]) -> dict[str, Any] | None:
    """The task that should run (desired state `running`), else the last changed one, of
    those not in `exclude` (a launch's tasks from before it); None when there is none."""
    tasks = [task for task in tasks if task.get("ID") not in exclude]
    wanted = [task for task in tasks if task.get("DesiredState") in _WANTED]
    pool = wanted or tasks
    if not pool:
        return None
    return max(pool, key=lambda task: int((task.get("Version") or {}).get("Index") or 0))


class SwarmDriver(DockerDriver):
    """Instances as Swarm services through a manager. See the module docstring."""

    def __init__(self, settings: Settings, client: docker.APIClient | None = None) -> None:
        super().__init__(settings, client)
        self._placed: dict[str, str] = {}  # instance id -> its service's node, as last seen
        self._addresses: dict[str, str] = {}  # node id -> where its instances listen
        self._own: str | None = None  # the manager's node id, once asked
        self._node_images = NodeImages(settings.swarm_node_engines)

    # -- the service's state ------------------------------------------------------------------

    def _manager(self) -> Any:
        """The manager's client, untyped (the SDK's service calls have no annotations)."""
        return self.api()

    def _address(self, node: str) -> str:
        """Where instances on `node` listen and are dialled: `PF_SWARM_INSTANCE_ADDRESS` on
        the manager's own node, else the node's address in the swarm. Blocking (cached)."""
        if node not in self._addresses:
            client = self._manager()
            if node == self._own_node():
                self._addresses[node] = self.settings.swarm_instance_address
            else:
                status = client.inspect_node(node).get("Status") or {}
                self._addresses[node] = str(status.get("Addr") or "127.0.0.1")
        return self._addresses[node]

    def _spec_address(self, spec: InstanceSpec) -> str:
        return self.address(spec.id, spec.node)

    def _service(self, spec: InstanceSpec) -> dict[str, Any] | None:
        """The instance's service, None if there is none; one of that name that is not the
        instance's is refused (`StartError`). Blocking."""
        try:
            service: dict[str, Any] = self._manager().inspect_service(container_name(spec))
        except docker.errors.NotFound:
            return None
        except docker.errors.APIError as err:
            if err.response is not None and err.response.status_code == 503:
                where = self.settings.docker_host
                why = err.explanation or err
                raise StartError(f"the engine at {where} is not a swarm manager: {why}") from err
            raise
        labels = (service.get("Spec") or {}).get("Labels") or {}
        if labels.get(LABEL_INSTANCE) != spec.id or labels.get(LABEL_ROOT) != str(
            spec.layout.root.absolute()
        ):
            raise StartError(
                f"instance {spec.id}: service {container_name(spec)} exists and is not its own"
            )
        return service

    def _inspect(
        self, spec: InstanceSpec, exclude: frozenset[str] = frozenset()
    ) -> dict[str, Any] | None:
        """What the docker driver reads of a container, made from the service and its newest
        task: `State` (`Running`, `Pid`, `ExitCode`), plus `Pending` (a task is on its way),
        `Service`, `Task`, `ContainerID` and `TaskIDs` (all of its tasks). Tasks in `exclude`
        are not looked at. None when there is no service."""
        service = self._service(spec)
        if service is None:
            return None
        placed = ((service.get("Spec") or {}).get("Labels") or {}).get(LABEL_NODE)
        if placed:
            self._placed[spec.id] = str(placed)
            self._address(str(placed))  # known before the probe dials it
        tasks = self._manager().tasks(filters={"service": service["ID"]})
        task = _newest(tasks, exclude) if _replicas(service) > 0 else None
        status = (task or {}).get("Status") or {}
        container = status.get("ContainerStatus") or {}
        state = str(status.get("State") or "")
        wanted = task is not None and task.get("DesiredState") in _WANTED
        # replicas 1 and no task yet: the orchestrator is about to make one
        pending = _replicas(service) > 0 and (not tasks or (wanted and state in _PENDING))
        return {
            "State": {
                "Running": wanted and state == "running",
                "Pid": int(container.get("PID") or 0),
                "ExitCode": container.get("ExitCode"),
                "Error": status.get("Err"),
            },
            "Pending": pending,
            "Service": service,
            "Task": task,
            "ContainerID": container.get("ContainerID"),
            "TaskIDs": frozenset(str(task.get("ID")) for task in tasks),
        }

    def _placement(self, spec: InstanceSpec, service: Mapping[str, Any] | None) -> str:
        """The node the instance's data is on, or goes to (see the module docstring)."""
        if spec.node:
            return spec.node
        if service is not None:
            placed = ((service.get("Spec") or {}).get("Labels") or {}).get(LABEL_NODE)
            if placed:
                return str(placed)
        if self.settings.swarm_node:
            return self.settings.swarm_node
        client = self._manager()
        labelled = swarm_nodes.nodes(client)
        if labelled:
            committed = swarm_nodes.committed_memory(swarm_nodes.placements(client))
            chosen = choose(labelled, committed)
            if chosen is None:
                raise StartError("no node with pocketfleet's label is ready and active")
            return chosen.id
        node = self._own_node()
        if not node:
            where = self.settings.docker_host
            raise StartError(f"the engine at {where} is not a swarm manager")
        return node

    # -- the service's spec -------------------------------------------------------------------

    def _image_on(self, spec: InstanceSpec, node: str) -> str:
        """The id of the instance's image, which `node`'s engine holds (loaded there from the
        manager's engine when needed: `swarm_images`)."""
        image_id = self._image_id(spec)
        if node != self._own_node():
            self._node_images.ensure(self._manager(), node, image_id, self._image(spec))
        return image_id

    def _image_id(self, spec: InstanceSpec) -> str:
        """The id of the instance's image on the manager's engine (built there if needed)."""
        image: dict[str, Any] = self._manager().inspect_image(self._image(spec))
        return str(image["Id"])

    def _own_node(self) -> str:
        """The manager's node id ("" outside a swarm). Blocking (cached)."""
        if self._own is None:
            self._own = swarm_nodes.own_node(self._manager())
        return self._own

    def _argv(self, spec: InstanceSpec, address: str) -> list[str]:
        try:
            argv = spec.engine.serve_command(spec.version, spec.layout, spec.port)
        except EngineError as err:
            raise StartError(f"instance {spec.id}: {err}") from err
        loopback = f"127.0.0.1:{spec.port}"
        return [f"{address}:{spec.port}" if arg == loopback else arg for arg in argv]

    def _task_template(
        self, spec: InstanceSpec, image: str, node: str, force: int
    ) -> docker.types.TaskTemplate:
        root = str(spec.layout.root.absolute())
        mounts = [
            docker.types.Mount(path, path, type="bind", read_only=mode == "ro")
            for path, mode in self._binds(spec).items()
        ]
        mounts.append(docker.types.Mount(_TMP, None, type="tmpfs", tmpfs_size=_TMP_BYTES))
        mounts[-1]["TmpfsOptions"]["Mode"] = 0o1777
        labels = {LABEL_INSTANCE: spec.id, LABEL_ROOT: root, LABEL_ROLE: "serve"}
        env = self.spawner.child_env(spec)
        container = docker.types.ContainerSpec(
            image,
            command=self._argv(spec, self._address(node)),
            env=[f"{key}={value}" for key, value in env.items()],
            workdir=root,
            user=self._user(spec),
            labels=labels,
            mounts=mounts,
            read_only=True,
            cap_drop=["ALL"],
            stop_grace_period=int(self.settings.stop_timeout_s * 1e9),
        )
        nofile = open_files_limit(spec.max_open_files)
        container["Ulimits"] = [{"Name": "nofile", "Soft": nofile, "Hard": nofile}]  # API 1.41
        resources = docker.types.Resources(mem_limit=spec.memory_limit_mb * 1024 * 1024)
        resources["Limits"]["Pids"] = spec.max_processes  # API 1.41
        return docker.types.TaskTemplate(
            container,
            resources=resources,
            restart_policy=docker.types.RestartPolicy(condition="any", delay=_RESTART_DELAY_NS),
            placement=docker.types.Placement(constraints=[f"node.id=={node}"]),
            log_driver=docker.types.DriverConfig(
                "json-file",
                {"max-size": str(max(spec.log_max_bytes // 2, 4096)), "max-file": "2"},
            ),
            networks=[docker.types.NetworkAttachmentConfig("host")],
            force_update=force,
        )

    def _scale(self, service: Mapping[str, Any], replicas: int) -> None:
        """Set the replicas of `service`, its task template unchanged."""
        current = service["Spec"]
        self._manager().update_service(
            service["ID"],
            service["Version"]["Index"],
            task_template=current["TaskTemplate"],
            name=current["Name"],
            labels=current.get("Labels"),
            mode=docker.types.ServiceMode("replicated", replicas=replicas),
        )

    # -- the docker driver's steps, for a service ---------------------------------------------

    def _launch(self, spec: InstanceSpec, info: dict[str, Any] | None) -> dict[str, Any]:
        """Wait for a task on its way; else create the service, or update it with the spec's
        task template and 1 replica (a new task: forced when it had 1 already). Returns the
        inspection once its task runs or ended."""
        deadline = time.monotonic() + self.settings.start_timeout_s
        if info is not None and info["Pending"]:
            return self._wait_for_task(spec, deadline, frozenset())
        self._prepare(spec)
        service = info["Service"] if info is not None else None
        node = self._placement(spec, service)
        image = self._image_on(spec, node)
        self._placed[spec.id] = node
        if self._address(node) == "127.0.0.1" and not port_is_free(spec.port):
            raise PortTakenError(spec.id, spec.port)
        root = str(spec.layout.root.absolute())
        labels = {
            LABEL_INSTANCE: spec.id,
            LABEL_ROOT: root,
            LABEL_ROLE: "serve",
            LABEL_NODE: node,
        }
        client = self._manager()
        before: frozenset[str] = info["TaskIDs"] if info is not None else frozenset()
        one = docker.types.ServiceMode("replicated", replicas=1)
        if service is None:
            template = self._task_template(spec, image, node, 0)
            client.create_service(template, name=container_name(spec), labels=labels, mode=one)
        else:
            force = int(service["Spec"]["TaskTemplate"].get("ForceUpdate") or 0)
            force += 1 if _replicas(service) > 0 else 0
            client.update_service(
                service["ID"],
                service["Version"]["Index"],
                task_template=self._task_template(spec, image, node, force),
                name=container_name(spec),
                labels=labels,
                mode=one,
            )
        return self._wait_for_task(spec, deadline, before)

    def _wait_for_task(
        self, spec: InstanceSpec, deadline: float, before: frozenset[str]
    ) -> dict[str, Any]:
        """Poll until a task not in `before` runs or ended; its inspection."""
        while True:
            info = self._inspect(spec, before)
            if info is None:
                raise StartError(f"instance {spec.id}: its service was removed while starting")
            if info["Task"] is not None and not info["Pending"]:
                state = info["State"]
                if not state["Running"] and state.get("Error"):
                    log.info("instance %s: its task failed: %s", spec.id, state["Error"])
                return info
            if time.monotonic() > deadline:
                self._kill(spec)
                timeout = self.settings.start_timeout_s
                raise StartError(f"instance {spec.id}: no task of it ran within {timeout:g}s")
            time.sleep(_POLL_S)

    def _stop(self, spec: InstanceSpec) -> None:
        """Scale to 0, then stop the task's container at once when it is on this engine
        (SIGTERM, SIGKILL after `stop_timeout_s`): Swarm's agent waits 2 s before it stops a
        task (its gossip delay, fixed in the engine); else wait until none of its tasks runs
        (Swarm sends SIGTERM, SIGKILL after the grace period)."""
        info = self._inspect(spec)
        if info is None:
            return
        began = time.monotonic()
        service = info["Service"]
        if _replicas(service) > 0:
            self._scale(service, 0)
        local = info["ContainerID"] if info["State"]["Running"] else None
        if local:
            timeout = max(1, math.ceil(self.settings.stop_timeout_s))
            try:
                self._manager().stop(local, timeout=timeout)
                elapsed_ms = (time.monotonic() - began) * 1000
                log.info("instance %s: scaled to 0, stopped in %.1f ms", spec.id, elapsed_ms)
                return
            except docker.errors.NotFound:
                pass  # on another node: Swarm's agent stops it
        deadline = began + self.settings.stop_timeout_s + 10
        while time.monotonic() < deadline:
            tasks = self._manager().tasks(filters={"service": service["ID"]})
            states = {(task.get("Status") or {}).get("State") for task in tasks}
            if not states & (_PENDING | {"running"}):
                elapsed_ms = (time.monotonic() - began) * 1000
                log.info(
                    "instance %s: scaled to 0, no task runs after %.1f ms", spec.id, elapsed_ms
                )
                return
            time.sleep(_POLL_S)
        log.warning("instance %s: its task still runs after it was scaled to 0", spec.id)

    def _kill(self, spec: InstanceSpec) -> None:
        """Scale to 0 at once, killing the task's container first when it is on this engine."""
        with contextlib.suppress(docker.errors.APIError, StartError):
            info = self._inspect(spec)
            if info is None:
                return
            if info.get("ContainerID"):
                with contextlib.suppress(docker.errors.APIError):
                    self._manager().kill(info["ContainerID"])
            if _replicas(info["Service"]) > 0:
                self._scale(self._service(spec) or info["Service"], 0)

    def _stats(self, spec: InstanceSpec) -> Any:
        info = self._inspect(spec)
        if info is None or not info["State"]["Running"] or not info.get("ContainerID"):
            return None
        try:
            raw = self._manager().stats(info["ContainerID"], stream=False, one_shot=True)
        except docker.errors.NotFound:  # on another node (or just gone)
            return None
        return stats_of(raw)

    def _remove_containers(self, spec: InstanceSpec) -> None:
        """Remove the instance's services, wait until their containers are gone from this
        engine, then its one-off task containers (the docker driver's)."""
        client = self._manager()
        labels = [f"{LABEL_INSTANCE}={spec.id}", f"{LABEL_ROOT}={spec.layout.root.absolute()}"]
        for service in client.services(filters={"label": labels}):
            with contextlib.suppress(docker.errors.NotFound):
                client.remove_service(service["ID"])
        deadline = time.monotonic() + max(_REMOVE_TIMEOUT_S, self.settings.stop_timeout_s + 10)
        name = container_name(spec)
        filters = {"label": f"com.docker.swarm.service.name={name}"}
        while client.containers(all=True, filters=filters) and time.monotonic() < deadline:
            time.sleep(_POLL_S * 5)
        super()._remove_containers(spec)

    # -- the Driver contract (what differs) ---------------------------------------------------

    def address(self, instance_id: str, node: str = "") -> str:
        """The address of the node the instance's service is pinned to (as last seen), else
        of `node`; `PF_SWARM_INSTANCE_ADDRESS` for the manager's own node and for a node
        whose address is not known yet (`locate` learns it)."""
        placed = self._placed.get(instance_id) or node
        return self._addresses.get(placed, self.settings.swarm_instance_address)

    def node_of(self, instance_id: str) -> str | None:
        """The node its service is pinned to, as last seen."""
        return self._placed.get(instance_id)

    async def locate(self, nodes: Collection[str]) -> None:
        """Ask the manager the address of each of `nodes` it does not know yet."""

        def learn() -> None:
            for node in nodes:
                try:
                    self._address(node)
                except (docker.errors.DockerException, _RequestError, StartError) as err:
                    log.warning("the address of node %s is not known: %s", node, err)

        if any(node not in self._addresses for node in nodes):
            await asyncio.to_thread(learn)

    async def status(self, spec: InstanceSpec, pid: int | None, *, health: bool = True) -> Observed:
        """RUNNING with the task's pid (one quick health probe unless `health=False`) while
        its task runs; RUNNING without pid nor health while a task is on its way; else
        STOPPED."""
        info = await asyncio.to_thread(self._inspect, spec)
        if info is None:
            return Observed(RunState.STOPPED)
        if info["Pending"]:
            return Observed(RunState.RUNNING)
        if not info["State"]["Running"]:
            return Observed(RunState.STOPPED)
        healthy = health and await self._probe(spec, _STATUS_HEALTH_TIMEOUT_S)
        return Observed(RunState.RUNNING, int(info["State"]["Pid"]) or None, healthy)

    def read_logs(self, spec: InstanceSpec, tail: int) -> list[str]:
        """The last `tail` lines its tasks printed (the service's logs, stdout and stderr)."""
        if tail <= 0:
            return []
        try:
            chunks = self._manager().service_logs(
                container_name(spec), stdout=True, stderr=True, tail=tail
            )
            raw = b"".join(chunk if isinstance(chunk, bytes) else bytes(chunk) for chunk in chunks)
        except (docker.errors.DockerException, requests.exceptions.RequestException, StartError):
            return []
        return raw.decode("utf-8", errors="replace").splitlines()[-tail:]

    async def _listening(self, spec: InstanceSpec, pid: int) -> bool:
        """On the manager's own node, as the docker driver (the listener proven the task's
        as root); on another node, whether its address accepts on the port."""
        address = self._spec_address(spec)
        if address == "127.0.0.1":
            return await super()._listening(spec, pid)
        try:
            _, writer = await asyncio.open_connection(address, spec.port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    async def _probe(self, spec: InstanceSpec, timeout: float) -> bool:
        """One GET of the engine's health path at the instance address; True on 200."""
        return await self._health.healthy(spec, timeout, host=self._spec_address(spec))
