"""Where a new instance goes: the ready, active, not drained node with the most free memory
(its memory less the memory limits of the instances already placed on it, asleep ones
included: they wake where their data is). Pure: the caller reads the nodes (`swarm.py`).
A drained node (`pocketfleet nodes drain`) takes no new instance and no moved one."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeCapacity:
    id: str
    state: str  # ready, down, ...
    availability: str  # active, pause, drain
    memory_bytes: int
    drained: bool = False  # pocketfleet's drain (not Swarm's availability)


def free_memory(node: NodeCapacity, committed: Mapping[str, int]) -> int:
    return node.memory_bytes - committed.get(node.id, 0)


def usable(node: NodeCapacity) -> bool:
    """Whether instances may go to `node`: ready, active and not drained."""
    return node.state == "ready" and node.availability == "active" and not node.drained


def choose(nodes: Sequence[NodeCapacity], committed: Mapping[str, int]) -> NodeCapacity | None:
    """The node a new instance goes to, None when no node is usable. Ties: the first in
    `nodes` order."""
    usable_nodes = [node for node in nodes if usable(node)]
    if not usable_nodes:
        return None
    return max(usable_nodes, key=lambda node: free_memory(node, committed))
