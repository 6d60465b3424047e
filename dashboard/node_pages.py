"""Operators' Nodes page (`GET /nodes`): the machines instances run on, one row per node of
`NodeService.nodes()` (the same list as `GET /api/nodes`): name, address, role, state and
availability, memory (total and free), disk, instances running and asleep, and whether
placement puts new instances there.

- `PF_DRIVER=swarm`: the Swarm's nodes with pocketfleet's label; a manager that does not
  answer is this page with the service's message and status 503 (no rows).
- `process` / `docker`: one row, this machine.
- Others than operators: 403 (the dashboard's refusal page); no login: the login page.

Drain: no action yet. The place for it is the `node_actions` macro of `nodes.html` (a POST
form per row, with the CSRF field) and a `POST /nodes/{name}/drain` route here over the nodes
service (`checked_form` first, then a redirect with a notice).
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request, Response

from control_plane.nodes.placement import NodeCapacity, choose
from control_plane.nodes.schemas import NodePublic
from control_plane.nodes.service import NodeService
from control_plane.services.errors import Unavailable
from dashboard.web import PageRoute, cp_of, render, require_operator

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@dataclass(frozen=True)
class NodeRow:
    """What the page shows of a node."""

    node: NodePublic

    @property
    def placeable(self) -> bool:
        """Whether placement would choose this node were it the only one (placement's own
        rule: ready and active), i.e. new instances may go there."""
        node = self.node
        alone = NodeCapacity(node.id, node.state, node.availability, node.memory_bytes)
        return choose([alone], {}) is not None

    @property
    def overcommitted_bytes(self) -> int:
        """How far the memory limits placed here exceed its memory (0: they fit)."""
        return max(0, -self.node.memory_free_bytes)


@router.get("/nodes")
async def nodes(request: Request) -> Response:
    await require_operator(request)
    cp = cp_of(request)
    error = ""
    status = 200
    try:
        found = await NodeService(cp.settings, cp.db).nodes()
    except Unavailable as exc:
        found, error, status = [], exc.message, exc.status
    return render(
        request,
        "nodes.html",
        status,
        rows=[NodeRow(node) for node in found],
        driver=cp.settings.driver,
        error=error,
    )
