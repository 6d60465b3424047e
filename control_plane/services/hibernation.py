"""Hibernation as owners, operators and the scheduler ask for it — by writing desired state.

- `hibernate(account, name)`: a running instance is wanted `hibernated`; the reconciler puts
  it to sleep (see `control_plane.hibernation`). Already hibernated: nothing changes.
- `wake(account, name)`: a hibernated instance is wanted `running` (earlier failed wakes are
  forgiven); the reconciler starts it. Already running: nothing changes.
- Refusals: another account's instance is 404 (never 403); an instance in any other state
  (stopped, failed, starting, being deleted) is 409 with what to do instead.
- `sweep_idle()`: the idle sweep, run periodically by the scheduler: every instance that runs
  as wanted, has no request in flight and no open event stream, and whose last request (or
  start) is older than its idle limit (`idle_timeout_s`, else `PF_IDLE_TIMEOUT_S`; 0 = never)
  is wanted `hibernated`. One query, no tenant data read: activity comes from the proxy.
"""

from __future__ import annotations

import time

from sqlalchemy import update
from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Instance
from control_plane.hibernation import IDLE_ACTOR, is_idle
from control_plane.lifecycle import InstanceState
from control_plane.services.errors import Conflict
from control_plane.services.instances import InstanceService, Reconcile, actor_of
from control_plane.settings import Settings
from proxy.activity import ActivityTracker

_STATE_HINTS = {
    InstanceState.STOPPED: "it is stopped; start it instead",
    InstanceState.FAILED: "it failed; start it to try again",
    InstanceState.PROVISIONING: "it is starting; try again once it runs",
    InstanceState.DELETING: "it is being deleted",
}


class HibernationService:
    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        instances: InstanceService,
        reconciler: Reconcile,
        activity: ActivityTracker,
    ) -> None:
        self.settings = settings
        self.db = db
        self.instances = instances
        self.reconciler = reconciler
        self.activity = activity

    async def hibernate(self, account: Account, name: str) -> Instance:
        """Put a running instance to sleep now; returns it once hibernated (or refuses)."""
        return await self._move(account, name, InstanceState.RUNNING, "hibernated")

    async def wake(self, account: Account, name: str) -> Instance:
        """Wake a hibernated instance now; returns it once running (or refuses)."""
        return await self._move(account, name, InstanceState.HIBERNATED, "running")

    async def _move(
        self, account: Account, name: str, source: InstanceState, desired: str
    ) -> Instance:
        instance = await self.instances.get(account, name)  # 404 unless the caller's
        target = InstanceState.HIBERNATED if desired == "hibernated" else InstanceState.RUNNING
        verb = "hibernated" if desired == "hibernated" else "woken"
        async with self.db() as session:
            row = await session.get(Instance, instance.id)
            status = InstanceState(row.status) if row is not None else InstanceState.DELETED
            if row is None or (status != source and status != target) or row.hold:
                hint = f"held by {row.hold}" if row is not None and row.hold else None
                hint = hint or _STATE_HINTS.get(status, f"it is {status}")
                raise Conflict(f"{name} cannot be {verb}: {hint}")
            if status == target and row.desired == desired:
                return row
            row.desired = desired
            row.desired_by = actor_of(account)
            if desired == "running":
                row.crash_count = 0
                row.next_start_at = None
            session.add(row)
            await session.commit()
        self.reconciler.nudge()
        await self.reconciler.wait_settled(instance.id, self.settings.start_timeout_s + 10)
        return await self.instances.get(account, name)

    async def sweep_idle(self) -> list[str]:
        """Want every idle running instance hibernated; return their names."""
        now = time.time()
        activity = self.activity.snapshot()
        awake = (
            col(Instance.status) == InstanceState.RUNNING.value,
            col(Instance.desired) == "running",
            col(Instance.hold).is_(None),
        )
        async with self.db.read() as session:
            rows = (
                await session.exec(
                    select(Instance)
                    .join(Account, col(Account.id) == col(Instance.owner_id))
                    .where(*awake, col(Account.suspended_at).is_(None))
                )
            ).all()
        idle = {
            row.id: row.name
            for row in rows
            if row.name is not None
            and is_idle(
                self.settings, row, activity.get(self.settings.instance_host(row.name)), now
            )
        }
        if not idle:
            return []
        async with self.db() as session:
            # conditional: an owner's wish written since the read above wins
            await session.exec(
                update(Instance)
                .where(col(Instance.id).in_(list(idle)), *awake)
                .values(desired="hibernated", desired_by=IDLE_ACTOR)
            )
            await session.commit()
        self.reconciler.nudge()
        return sorted(name for name in idle.values() if name is not None)
