"""The operators' view of the machines instances run on (`GET /api/nodes`), the same on every
driver:

- `PF_DRIVER=swarm`: the Swarm's nodes with pocketfleet's label, read through the manager at
  `PF_DOCKER_HOST` (`swarm.py`): address, state, availability, memory (the node's description)
  and free memory (less the memory limits of the instances placed there); disk only for the
  node the control plane runs on (its data folder's file system). The node an instance is
  counted on is its service's placement label (where Swarm pins it now). `Instance.node` is
  the node its data is on (desired state: the reconciler records where the driver placed it,
  a move changes it); `nodes` fills it in only where it is still empty (an instance placed
  before the column existed), never overwriting it (a move may be under way).
- `process` / `docker`: one node, this machine (hostname, memory and disk from psutil), which
  every instance is on.

Instance counts come from the control database: `running` (status running or provisioning),
`asleep` (hibernated or stopped); failed and deleting instances are in neither.
A manager that does not answer is a 503 (`Unavailable`); `join_command` on another driver is
a 409 (`Conflict`).
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

import docker
import docker.errors
import psutil
import requests.exceptions
from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Instance
from control_plane.lifecycle import InstanceState
from control_plane.nodes import swarm
from control_plane.nodes.placement import free_memory
from control_plane.nodes.schemas import JoinCommandPublic, NodePublic
from control_plane.services.errors import Conflict, Invalid, Unavailable
from control_plane.settings import Settings

_RUNNING = {InstanceState.RUNNING.value, InstanceState.PROVISIONING.value}
_ASLEEP = {InstanceState.HIBERNATED.value, InstanceState.STOPPED.value}
_API_TIMEOUT_S = 30


class NodeService:
    def __init__(self, settings: Settings, db: SessionFactory) -> None:
        self.settings = settings
        self.db = db

    async def nodes(self) -> list[NodePublic]:
        """Every node with its capacity and instance counts (see the module docstring)."""
        rows = await self._instances()
        if self.settings.driver != "swarm":
            return [self._this_machine(rows)]
        found, placed, own = await asyncio.to_thread(self._read_swarm)
        await self._record(rows, {key: node for key, (node, _) in placed.items()})
        committed = swarm.committed_memory(placed)
        counts: dict[str, Counter[str]] = {}
        for instance_id, status in rows.items():
            node = placed.get(instance_id, ("", 0))[0]
            counts.setdefault(node, Counter())[_kind(status)] += 1
        disk = psutil.disk_usage(str(self.settings.data_dir))
        return [
            NodePublic(
                id=node.id,
                name=node.name,
                address=node.address,
                role=node.role,
                state=node.state,
                availability=node.availability,
                drained=node.drained,
                memory_bytes=node.memory_bytes,
                memory_free_bytes=free_memory(node, committed),
                disk_bytes=disk.total if node.id == own else None,
                disk_free_bytes=disk.free if node.id == own else None,
                instances_running=counts.get(node.id, Counter())["running"],
                instances_asleep=counts.get(node.id, Counter())["asleep"],
            )
            for node in found
        ]

    async def join_command(self) -> JoinCommandPublic:
        """What a new machine runs to join the swarm as a worker (PF_DRIVER=swarm only)."""
        if self.settings.driver != "swarm":
            raise Conflict(
                f"nodes join only a swarm: this control plane runs PF_DRIVER="
                f"{self.settings.driver} (one machine)"
            )
        command, label = await asyncio.to_thread(self._call, swarm.join_command)
        return JoinCommandPublic(command=command, label_command=label)

    # -- for moves and drains (PF_DRIVER=swarm) ------------------------------------------------

    def require_swarm(self, what: str) -> None:
        if self.settings.driver != "swarm":
            raise Conflict(
                f"{what} needs a swarm: this control plane runs PF_DRIVER="
                f"{self.settings.driver} (one machine)"
            )

    async def resolve(self, name: str) -> swarm.SwarmNode:
        """The labelled node whose id or hostname is `name` (an id first); 422 when none is,
        or when several nodes have that hostname."""
        found: list[swarm.SwarmNode] = await asyncio.to_thread(self._call, swarm.nodes)
        by_id = [node for node in found if node.id == name]
        named = by_id or [node for node in found if node.name == name]
        if not named:
            raise Invalid(f"no node with pocketfleet's label is named {name!r}", field="node")
        if len(named) > 1:
            raise Invalid(f"{len(named)} nodes are named {name!r}: give its id", field="node")
        return named[0]

    async def swarm_state(self) -> tuple[list[swarm.SwarmNode], dict[str, tuple[str, int]]]:
        """The labelled nodes and every instance's (node, memory limit)."""
        found, placed, _ = await asyncio.to_thread(self._read_swarm)
        return found, placed

    async def set_drained(self, node_id: str, drained: bool) -> None:
        def mark(client: Any) -> None:
            swarm.set_drained(client, node_id, drained)

        await asyncio.to_thread(self._call, mark)

    async def live_task_nodes(self, instance_id: str) -> list[str]:
        nodes: list[str] = await asyncio.to_thread(
            self._call, lambda client: swarm.live_task_nodes(client, instance_id)
        )
        return nodes

    # -- reading ------------------------------------------------------------------------------

    async def _instances(self) -> dict[str, str]:
        """Live instances: id -> status."""
        async with self.db.read() as session:
            rows = await session.exec(
                select(Instance.id, Instance.status).where(
                    col(Instance.status) != InstanceState.DELETED.value
                )
            )
            return dict(rows.all())

    async def _record(self, rows: dict[str, str], nodes: dict[str, str]) -> None:
        """Copy each instance's node (its service's placement) into an empty `Instance.node`."""
        async with self.db() as session:
            changed = False
            for instance_id, node in nodes.items():
                if instance_id not in rows:
                    continue
                instance = await session.get(Instance, instance_id)
                if instance is not None and not instance.node:
                    instance.node = node
                    session.add(instance)
                    changed = True
            if changed:
                await session.commit()

    def _call(self, read: Any) -> Any:
        """`read(client)` on a new client of the manager; 503 when it does not answer."""
        try:
            client = docker.APIClient(
                base_url=self.settings.docker_host, version="auto", timeout=_API_TIMEOUT_S
            )
        except docker.errors.DockerException as err:
            where = self.settings.docker_host
            raise Unavailable(f"the swarm manager at {where} does not answer: {err}") from err
        try:
            return read(client)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            where = self.settings.docker_host
            raise Unavailable(f"the swarm manager at {where} refused: {err}") from err
        finally:
            client.close()

    def _read_swarm(self) -> tuple[list[swarm.SwarmNode], dict[str, tuple[str, int]], str]:
        def read(client: Any) -> tuple[list[swarm.SwarmNode], dict[str, tuple[str, int]], str]:
            return swarm.nodes(client), swarm.placements(client), swarm.own_node(client)

        found: tuple[list[swarm.SwarmNode], dict[str, tuple[str, int]], str] = self._call(read)
        return found

    def _this_machine(self, rows: dict[str, str]) -> NodePublic:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.settings.data_dir))
        kinds = Counter(_kind(status) for status in rows.values())
        hostname = socket.gethostname()
        return NodePublic(
            id=hostname,
            name=hostname,
            address="127.0.0.1",
            role="local",
            state="ready",
            availability="active",
            memory_bytes=memory.total,
            memory_free_bytes=memory.available,
            disk_bytes=disk.total,
            disk_free_bytes=disk.free,
            instances_running=kinds["running"],
            instances_asleep=kinds["asleep"],
        )


def _kind(status: str) -> str:
    if status in _RUNNING:
        return "running"
    if status in _ASLEEP:
        return "asleep"
    return "other"
