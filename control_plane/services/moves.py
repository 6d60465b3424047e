"""Moving an instance to another node of the swarm, and draining a node (operators only).

A move (`move(name, node)`), step by step, modelled on a restore (`backups/restores.py`): an
exclusive operation that holds the instance stopped while it works, through the reconciler
and the lifecycle's own moves (`running -> stopped -> provisioning -> running`, each an event
row whose reason names the move), never calling the driver itself:

1. Checks: `PF_DRIVER=swarm` (else 409), the instance exists (404: operators move anyone's)
   and is not being deleted nor held by another operation (409), the target is a node with
   pocketfleet's label (422 naming it; by id or hostname) that is ready, active and not
   drained (409), and not the one the instance is on (409).
2. Stop: `Instance.hold = "move:NODE"` is committed; the reconciler keeps the instance stopped
   (its service scaled to 0; the driver waits until Swarm's agent stopped the task). The move
   waits until the instance is `stopped` and no task of it runs or is on its way on any node
   (the manager's task list): one writer per database, never two. Otherwise the hold is
   released and the move refused (503), the instance left where it was.
3. Data: the instance folder is at the same path on every node, and in this deployment it is
   one shared file system (the tests': both engines on one machine), so nothing is copied.
   With a disk per node, the node service of issue 18 does this step: the source node's
   service sends the stopped folder (a final sync after a live pre-copy, or the last snapshot
   in S3 plus Litestream's WAL since) to the target's, which checks it against the source's
   manifest (sizes, SHA-256) before the move goes on; a failure releases the hold with the
   instance still on the source.
4. Switch: `Instance.node = NODE` and the hold released, in one commit (a crash before it
   leaves the instance on its source, after it on the target: `recover` releases a hold that
   a stopped control plane left). The reconciler starts it: the driver re-pins the stopped
   service to the target (its placement constraint and label), waits for its task there and
   for its health, records it `running` and switches its route to the target's address.
5. The answer: `{"instance", "node", "downtime_ms"}`, the downtime measured from the commit of
   the hold (the stop begins) to the first 200 of its health path at its new upstream (the
   address the proxy dials). An instance that was not running (stopped, hibernated, failed)
   is only re-pinned; its downtime is 0 (a hibernated one is started on the target, then
   sleeps again as its desired state says).

A drain (`drain(node)`): the node is marked drained (`nodes.swarm.set_drained`: a Swarm node
label, so no placement chooses it; Swarm's own `drain` would move the tasks without their
data), then every live instance on it (its recorded node, or its service's placement) is
moved, one after the other, to the usable node with the most free memory (409 when there is
none). The answer lists each move.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Instance
from control_plane.drivers.base import Driver
from control_plane.engines.registry import EngineRegistry
from control_plane.lifecycle import InstanceState
from control_plane.nodes import swarm
from control_plane.nodes.placement import choose, usable
from control_plane.nodes.schemas import DrainPublic, MovePublic
from control_plane.nodes.service import NodeService
from control_plane.routes_for import upstream_for
from control_plane.services.errors import Conflict, NotFound, Unavailable
from control_plane.services.instances import Reconcile
from control_plane.settings import Settings

log = logging.getLogger(__name__)

HOLD_PREFIX = "move:"
_GONE = (InstanceState.DELETING.value, InstanceState.DELETED.value)
_TASK_POLL_S = 0.05
_HEALTH_POLL_S = 0.01
_SETTLE_MARGIN_S = 15.0


class MoveService:
    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        engines: EngineRegistry,
        driver: Driver,
        reconciler: Reconcile,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engines = engines
        self.driver = driver
        self.reconciler = reconciler
        self.nodes = NodeService(settings, db)

    # -- moves --------------------------------------------------------------------------------

    async def move(self, name: str, node_name: str) -> MovePublic:
        """Move the instance `name` to the node `node_name` (see the module docstring)."""
        self.nodes.require_swarm("moving an instance")
        instance = await self._instance(name)
        target = await self.nodes.resolve(node_name)
        if not usable(target):
            why = "drained" if target.drained else f"{target.state}, {target.availability}"
            raise Conflict(f"node {target.name} ({target.id}) takes no instances now: {why}")
        _, placed = await self.nodes.swarm_state()
        return await self._move(instance, target.id, placed)

    async def drain(self, node_name: str) -> DrainPublic:
        """Mark the node drained, then move each of its instances to the best other node."""
        self.nodes.require_swarm("draining a node")
        node = await self.nodes.resolve(node_name)
        await self.nodes.set_drained(node.id, True)
        moved: list[MovePublic] = []
        for instance_id in await self._on_node(node.id):
            found, placed = await self.nodes.swarm_state()
            others = [other for other in found if other.id != node.id]
            best = choose(others, swarm.committed_memory(placed))
            if best is None:
                raise Conflict(
                    f"node {node.name} is drained, but no other node can take its instances "
                    f"({len(moved)} moved)"
                )
            async with self.db.read() as session:
                instance = await session.get(Instance, instance_id)
            if instance is None or instance.status in _GONE or instance.name is None:
                continue
            moved.append(await self._move(instance, best.id, placed))
        return DrainPublic(node=node.id, moved=moved)

    async def recover(self) -> None:
        """Release the holds of moves a stopped control plane left (see the module
        docstring, step 4: the instance stays on the node its row names)."""
        async with self.db() as session:
            rows = (
                await session.exec(
                    select(Instance).where(col(Instance.hold).startswith(HOLD_PREFIX))
                )
            ).all()
            for row in rows:
                log.warning("instance %s: a move left unfinished; it stays on %s", row.id, row.node)
                row.hold = None
                session.add(row)
            await session.commit()
        if rows:
            self.reconciler.nudge()

    # -- the procedure ------------------------------------------------------------------------

    async def _instance(self, name: str) -> Instance:
        async with self.db.read() as session:
            row = (await session.exec(select(Instance).where(Instance.name == name))).first()
        if row is None or row.status == InstanceState.DELETED:
            raise NotFound(f"no instance is named {name}")
        return row

    async def _on_node(self, node_id: str) -> list[str]:
        """The live instances on `node_id`: recorded there, or placed there by their service
        (an instance recorded nowhere yet)."""
        _, placed = await self.nodes.swarm_state()
        async with self.db.read() as session:
            rows = (
                await session.exec(
                    select(Instance.id, Instance.node).where(col(Instance.status).not_in(_GONE))
                )
            ).all()
        return sorted(
            instance_id
            for instance_id, recorded in rows
            if (recorded or placed.get(instance_id, ("", 0))[0]) == node_id
        )

    async def _move(
        self, instance: Instance, node: str, placed: dict[str, tuple[str, int]]
    ) -> MovePublic:
        name = instance.name or instance.former_name
        source = instance.node or placed.get(instance.id, ("", 0))[0]
        if instance.status in _GONE:
            raise Conflict(f"{name} is being deleted")
        if instance.hold:
            raise Conflict(f"{name} is held by {instance.hold}; try again when it is done")
        if source == node:
            raise Conflict(f"{name} is on node {node} already")
        was_running = instance.status == InstanceState.RUNNING
        began = await self._hold(instance, f"{HOLD_PREFIX}{node}")
        try:
            await self._stopped(instance)
        except BaseException:
            await self._release(instance.id, None)
            raise
        # step 3 (the data): one shared file system here; see the module docstring
        await self._release(instance.id, node)
        await self.reconciler.wait_settled(
            instance.id, self.settings.start_timeout_s + _SETTLE_MARGIN_S
        )
        downtime_ms = 0.0
        if was_running:
            downtime_ms = (await self._first_healthy(instance.id) - began) * 1000
        log.info("instance %s moved: %s -> %s, %.0f ms", instance.id, source, node, downtime_ms)
        return MovePublic(instance=name, node=node, downtime_ms=round(downtime_ms, 1))

    async def _hold(self, instance: Instance, hold: str) -> float:
        """Commit the hold (refused when another operation holds it meanwhile); the moment."""
        async with self.db() as session:
            row = await session.get(Instance, instance.id)
            if row is None or row.status in _GONE:
                raise NotFound(f"no instance is named {instance.name}")
            if row.hold:
                raise Conflict(f"{instance.name} is held by {row.hold}")
            row.hold = hold
            session.add(row)
            await session.commit()
        began = time.monotonic()
        self.reconciler.nudge()
        return began

    async def _stopped(self, instance: Instance) -> None:
        """Wait until the instance is stopped and no task of it runs anywhere (503 if not)."""
        timeout = self.settings.stop_timeout_s + _SETTLE_MARGIN_S
        deadline = time.monotonic() + timeout
        await self.reconciler.wait_settled(instance.id, timeout)
        async with self.db.read() as session:
            row = await session.get(Instance, instance.id)
        if row is None or row.pid is not None or row.status not in ("stopped", "failed"):
            state = row.status if row is not None else "gone"
            raise Unavailable(f"{instance.name} did not stop (it is {state}); not moved")
        while nodes := await self.nodes.live_task_nodes(instance.id):
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"{instance.name}: a task of it still runs on {', '.join(nodes)}; not moved"
                )
            await asyncio.sleep(_TASK_POLL_S)

    async def _release(self, instance_id: str, node: str | None) -> None:
        """Release the move's hold, with the instance on `node` now (None: where it was)."""
        async with self.db() as session:
            row = await session.get(Instance, instance_id)
            if row is not None and row.hold and row.hold.startswith(HOLD_PREFIX):
                row.hold = None
                if node is not None:
                    row.node = node
                session.add(row)
                await session.commit()
        self.reconciler.nudge()

    async def _first_healthy(self, instance_id: str) -> float:
        """When the instance's health path first answered 200 at its upstream (503 when it
        did not within the start timeout: it failed on the target)."""
        async with self.db.read() as session:
            row = await session.get(Instance, instance_id)
        if row is None or row.port is None or row.status != InstanceState.RUNNING:
            state = row.status if row is not None else "gone"
            reason = row.status_reason if row is not None else ""
            raise Unavailable(f"the instance did not start on its new node ({state}: {reason})")
        upstream = upstream_for(self.driver, row, row.port)
        url = f"{upstream.base_url}{self.engines.get(row.engine).health_path}"
        deadline = time.monotonic() + self.settings.start_timeout_s
        async with httpx.AsyncClient(trust_env=False) as client:
            while True:
                try:
                    if (await client.get(url, timeout=2.0)).status_code == 200:
                        return time.monotonic()
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise Unavailable(f"the instance does not answer at {upstream.base_url}")
                await asyncio.sleep(_HEALTH_POLL_S)
