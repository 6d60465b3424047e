"""The machines instances run on (operators only: 401 without credentials, 403 for others).

- `GET /api/nodes`: every node (`NodePublic`): Swarm nodes with pocketfleet's label with
  `PF_DRIVER=swarm`, else this machine; 503 when the swarm manager does not answer.
- `GET /api/nodes/join-command`: what a new machine runs to join the swarm; 409 on another
  driver.
"""

from __future__ import annotations

from control_plane.api.deps import CP, Operator
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.nodes.schemas import JoinCommandPublic, NodePublic
from control_plane.nodes.service import NodeService

router = api_router("nodes", 401, 403, 503)


@router.get("/api/nodes")
async def nodes(cp: CP, _operator: Operator) -> list[NodePublic]:
    return await NodeService(cp.settings, cp.db).nodes()


@router.get("/api/nodes/join-command", responses=error_responses(409))
async def join_command(cp: CP, _operator: Operator) -> JoinCommandPublic:
    return await NodeService(cp.settings, cp.db).join_command()
