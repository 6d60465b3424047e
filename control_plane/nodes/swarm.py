"""Reading a Swarm through a manager's API (the docker SDK, blocking: callers use threads):
its nodes with pocketfleet's label (`pocketfleet.node=true`), the memory committed on each
(the memory limits of pocketfleet's services pinned there), which node each instance's service
is on, the nodes its tasks still run on, and the command that joins a new machine.
Writing: a node's drain mark (`pocketfleet.drained=true`, a node label kept by the Swarm: no
new or moved instance goes there; Swarm's own `drain` availability is not used, since Swarm
would then reschedule the tasks elsewhere without their data)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from control_plane.drivers.docker import LABEL_INSTANCE as INSTANCE_LABEL
from control_plane.nodes.placement import NodeCapacity

NODE_LABEL = "pocketfleet.node"
PLACED_ON_LABEL = "pocketfleet.placed-on"  # on an instance's service: the node it is pinned to
DRAINED_LABEL = "pocketfleet.drained"
_LIVE_TASK_STATES = {
    "new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting",
    "running",
}  # fmt: skip

SWARM_PORT = 2377


@dataclass(frozen=True, kw_only=True)
class SwarmNode(NodeCapacity):
    name: str
    address: str
    role: str


def _label_set(node: Mapping[str, Any], label: str) -> bool:
    labels = (node.get("Spec") or {}).get("Labels") or {}
    return str(labels.get(label, "")).lower() == "true"


def _labelled(node: Mapping[str, Any]) -> bool:
    return _label_set(node, NODE_LABEL)


def nodes(client: Any) -> list[SwarmNode]:
    """The swarm's nodes with pocketfleet's label, by hostname."""
    found: list[SwarmNode] = []
    for node in client.nodes():
        if not _labelled(node):
            continue
        spec = node.get("Spec") or {}
        status = node.get("Status") or {}
        description = node.get("Description") or {}
        found.append(
            SwarmNode(
                id=str(node["ID"]),
                state=str(status.get("State") or "unknown"),
                availability=str(spec.get("Availability") or "active"),
                memory_bytes=int((description.get("Resources") or {}).get("MemoryBytes") or 0),
                name=str(description.get("Hostname") or node["ID"]),
                address=str(status.get("Addr") or ""),
                role=str(spec.get("Role") or "worker"),
                drained=_label_set(node, DRAINED_LABEL),
            )
        )
    return sorted(found, key=lambda node: (node.name, node.id))


def placements(client: Any) -> dict[str, tuple[str, int]]:
    """For every instance with a service: (its node, its memory limit in bytes)."""
    placed: dict[str, tuple[str, int]] = {}
    for service in client.services(filters={"label": PLACED_ON_LABEL}):
        spec = service.get("Spec") or {}
        labels = spec.get("Labels") or {}
        limits = ((spec.get("TaskTemplate") or {}).get("Resources") or {}).get("Limits") or {}
        if labels.get(INSTANCE_LABEL):
            placed[str(labels[INSTANCE_LABEL])] = (
                str(labels[PLACED_ON_LABEL]),
                int(limits.get("MemoryBytes") or 0),
            )
    return placed


def committed_memory(placed: Mapping[str, tuple[str, int]]) -> dict[str, int]:
    """Memory limits summed per node."""
    committed: dict[str, int] = {}
    for node, memory in placed.values():
        committed[node] = committed.get(node, 0) + memory
    return committed


def own_node(client: Any) -> str:
    """The id of the node whose engine `client` speaks to ("" when not in a swarm)."""
    return str((client.info().get("Swarm") or {}).get("NodeID") or "")


def join_command(client: Any) -> tuple[str, str]:
    """`docker swarm join --token WORKER_TOKEN MANAGER:2377`, and the command that labels the
    new node for pocketfleet afterwards."""
    token = client.inspect_swarm()["JoinTokens"]["Worker"]
    swarm = client.info().get("Swarm") or {}
    managers = swarm.get("RemoteManagers") or []
    own = [m for m in managers if m.get("NodeID") == swarm.get("NodeID")] or managers
    address = str(own[0]["Addr"]) if own else f"{swarm.get('NodeAddr')}:{SWARM_PORT}"
    label = f"docker node update --label-add {NODE_LABEL}=true NEW_NODE_HOSTNAME"
    return f"docker swarm join --token {token} {address}", label


def set_drained(client: Any, node_id: str, drained: bool) -> None:
    """Mark `node_id` drained for pocketfleet (or clear the mark)."""
    node = client.inspect_node(node_id)
    spec = dict(node["Spec"])
    labels = dict(spec.get("Labels") or {})
    if drained:
        labels[DRAINED_LABEL] = "true"
    else:
        labels.pop(DRAINED_LABEL, None)
    spec["Labels"] = labels
    client.update_node(node_id, node["Version"]["Index"], spec)


def live_task_nodes(client: Any, instance_id: str) -> list[str]:
    """The nodes where a task of the instance's services runs or is on its way."""
    found: list[str] = []
    for service in client.services(filters={"label": f"{INSTANCE_LABEL}={instance_id}"}):
        for task in client.tasks(filters={"service": service["ID"]}):
            if (task.get("Status") or {}).get("State") in _LIVE_TASK_STATES:
                found.append(str(task.get("NodeID") or ""))
    return found
