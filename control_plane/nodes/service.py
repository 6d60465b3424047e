"""The operators' view of the machines instances run on (`GET /api/nodes`), the same on every
driver:

- `PF_DRIVER=swarm`: the Swarm's nodes with pocketfleet's label, read through the manager at
  `PF_DOCKER_HOST` (`swarm.py`): address, state, availability, memory (the node's description)
  and free memory (less the memory limits of the instances placed there); disk only for the
  node the control plane runs on (its data folder's file system). The node of every instance
  is its service's placement label (the truth: Swarm pins the service there); `nodes` records
  it in `Instance.node` where the column differs (a copy, for readers of the database).
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
from control_plane.services.errors import Conflict, Unavailable
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
        """Copy each instance's node (its service's placement) into `Instance.node`."""
        async with self.db() as session:
            changed = False
            for instance_id, node in nodes.items():
                if instance_id not in rows:
                    continue
                instance = await session.get(Instance, instance_id)
                if instance is not None and instance.node != node:
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
