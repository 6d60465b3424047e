"""The machines instances run on (operators only: 401 without credentials, 403 for others).

- `GET /api/nodes`: every node (`NodePublic`): Swarm nodes with pocketfleet's label with
  `PF_DRIVER=swarm`, else this machine; 503 when the swarm manager does not answer.
- `GET /api/nodes/join-command`: what a new machine runs to join the swarm; 409 on another
  driver.
- `POST /api/nodes/{name}/drain`: mark the node drained (no placement chooses it) and move
  each of its instances to the best other node (`services.moves`); 422 for an unknown node,
  409 on another driver or when no other node can take them.
"""

from __future__ import annotations

from control_plane.api.deps import CP, Operator
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.nodes.schemas import DrainPublic, JoinCommandPublic, NodePublic
from control_plane.nodes.service import NodeService
from control_plane.services.moves import MoveService

router = api_router("nodes", 401, 403, 503)


@router.get("/api/nodes")
async def nodes(cp: CP, _operator: Operator) -> list[NodePublic]:
    return await NodeService(cp.settings, cp.db).nodes()


@router.get("/api/nodes/join-command", responses=error_responses(409))
async def join_command(cp: CP, _operator: Operator) -> JoinCommandPublic:
    return await NodeService(cp.settings, cp.db).join_command()


@router.post("/api/nodes/{name}/drain", responses=error_responses(409, 422))
async def drain(cp: CP, _operator: Operator, name: str) -> DrainPublic:
    moves = MoveService(cp.settings, cp.db, cp.engines, cp.driver, cp.reconciler)
    return await moves.drain(name)
