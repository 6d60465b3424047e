"""Where a new instance goes: the ready, active node with the most free memory."""

from __future__ import annotations

from control_plane.nodes.placement import NodeCapacity, choose, free_memory

GB = 1 << 30


def node(
    id: str, memory_gb: int, state: str = "ready", availability: str = "active"
) -> NodeCapacity:
    return NodeCapacity(id=id, state=state, availability=availability, memory_bytes=memory_gb * GB)


def test_the_node_with_the_most_free_memory_wins() -> None:
    small, big = node("small", 4), node("big", 8)
    assert choose([small, big], {}) == big
    assert choose([small, big], {"big": 5 * GB}) == small  # 3 GB free against 4
    assert free_memory(big, {"big": 5 * GB}) == 3 * GB


def test_nodes_down_paused_or_draining_get_nothing() -> None:
    nodes = [
        node("down", 64, state="down"),
        node("paused", 64, availability="pause"),
        node("draining", 64, availability="drain"),
        node("ready", 1),
    ]
    assert choose(nodes, {}) == nodes[-1]
    assert choose(nodes[:-1], {}) is None
    assert choose([], {}) is None


def test_ties_go_to_the_first_node() -> None:
    first, second = node("a", 8), node("b", 8)
    assert choose([first, second], {}) == first


def test_a_node_drained_by_pocketfleet_gets_nothing() -> None:
    drained = NodeCapacity(id="drained", state="ready", availability="active", memory_bytes=GB)
    drained = NodeCapacity(**{**drained.__dict__, "drained": True})
    small = node("small", 1)
    assert choose([drained, small], {"small": GB // 2}) == small
    assert choose([drained], {}) is None
