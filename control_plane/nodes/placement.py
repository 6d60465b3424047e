"""Where a new instance goes: the ready, active node with the most free memory (its memory
less the memory limits of the instances already placed on it, asleep ones included: they wake
where their data is). Pure: the caller reads the nodes (`swarm.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class NodeCapacity:
    id: str
    state: str  # ready, down, ...
    availability: str  # active, pause, drain
    memory_bytes: int


def free_memory(node: NodeCapacity, committed: Mapping[str, int]) -> int:
    return node.memory_bytes - committed.get(node.id, 0)


def choose(nodes: Sequence[NodeCapacity], committed: Mapping[str, int]) -> NodeCapacity | None:
    """The node a new instance goes to, None when no node is ready and active. Ties: the
    first in `nodes` order."""
    usable = [node for node in nodes if node.state == "ready" and node.availability == "active"]
    if not usable:
        return None
    return max(usable, key=lambda node: free_memory(node, committed))
