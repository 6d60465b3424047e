"""Replication paused while an instance does not run: its databases cost Litestream nothing.

Litestream checks every database it replicates once a second (its monitor, then the replica's
sync), whether or not anything was written: at a thousand instances that is half a core for
databases most of which sleep. A hibernated instance writes nothing, so its databases are
paused through Litestream's control socket, once
Litestream says they are shipped up to their last transaction (`ReplicationSupervisor.sync`,
waited for; `pause`: a last sync to the replica, then no monitor) and resumed when it
starts again (`resume`: Litestream reads the WAL first, so nothing written meanwhile is lost:
a wake resumes once its held requests are answered, a start by the reconciler beside it).

- `asleep(instance)`: called once the instance's engine is stopped (hibernation);
- `awake(instance)`: called when it starts again (after a wake has answered; beside a start
  by the reconciler);
- `reconcile(rows, listed)`: the backups loop's pass (at least every `FOLDER_CHECK_EVERY_S`),
  which makes the paused set match the fleet whatever was missed: every listed instance that
  does not run and is not wanted running is paused, every paused one that runs (or is being
  woken) is resumed. A Litestream that was (re)started replicates everything it lists, so its
  shard's instances leave the set then (and their sleeping databases, shipped before, are
  paused again without another wait); other shards' stay paused. A Litestream adopted from
  the control plane before keeps the databases that one paused closed: the first pass that
  sees a process new to it reads its `/list` once, and the instances all of whose databases
  it lists as not replicating are in the set from then on (pausing them again could never
  succeed: Litestream refuses to sync a database it has closed, 409; and their wake must
  resume them). Rows are re-read right before a pause (one query), so a wake in between is
  not undone.

The lag this costs: none for a sleeping instance (its last writes were synced when it was
paused), and for an instance started outside the hooks (after a crash of the control plane,
say) at most one pass of the backups loop before Litestream reads its WAL again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from sqlmodel import col, select

from control_plane.backups.replication import ReplicatedDb, ReplicationSupervisor
from control_plane.db.engine import SessionFactory
from control_plane.db.models import Instance
from control_plane.lifecycle import InstanceState
from control_plane.settings import Settings

log = logging.getLogger(__name__)

PAUSE_CONCURRENCY = 8  # instances paused at once (a restarted Litestream's sleeping ones)
# Hibernated only: a stopped or failed instance is the one an operator repairs by hand (its
# database changed with no engine running); a paused database would not ship that change.
NOT_RUNNING = frozenset({InstanceState.HIBERNATED.value})


def not_running(instance: Instance) -> bool:
    """Not running, and not wanted running (a wake in progress writes `desired` first)."""
    return _idle(instance.pid, instance.status, instance.desired)


def _idle(pid: int | None, status: str, desired: str) -> bool:
    return pid is None and status in NOT_RUNNING and desired != "running"


class ReplicationPauses:
    """See the module docstring."""

    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        replication: ReplicationSupervisor,
        databases: Callable[[Instance], list[ReplicatedDb]],
    ) -> None:
        self.settings = settings
        self.db = db
        self.replication = replication
        self.databases = databases
        self.paused: set[str] = set()  # instance ids whose databases Litestream does not monitor
        self._listed: set[str] = set()  # instance ids Litestream replicates (the last pass's)
        self._processes: dict[int, int | None] = {}  # shard -> the Litestream `paused` is about
        self._unread: set[int] = set()  # shards whose process's closed databases are not read yet
        # paused once fully shipped, and not run since (whatever Litestream runs now)
        self._quiet: set[str] = set()

    def _same_process(self, shard: int) -> bool:
        """Whether the paused set is still about the Litestream that runs the shard `shard`
        (else the shard's instances leave it: a new process monitors every database it
        lists), and one runs."""
        pid = self.replication.running_pid(shard)
        if pid != self._processes.get(shard):
            of = self.replication.shard_of
            self.paused = {key for key in self.paused if of(key) != shard}
            self._processes[shard] = pid
            self._unread.add(shard)
        return pid is not None

    def _running(self) -> set[int]:
        """The shards whose Litestream runs (after `_same_process` of each)."""
        return {k for k in range(self.replication.shards) if self._same_process(k)}

    async def asleep(self, instance: Instance) -> None:
        if not self.settings.replication or instance.id not in self._listed:
            return
        shard = self.replication.shard_of(instance.id)
        if not self._same_process(shard) or instance.id in self.paused:
            return
        await self._pause([instance])

    async def awake(self, instance: Instance) -> None:
        self._quiet.discard(instance.id)
        if instance.id not in self.paused:
            return
        if not self._same_process(self.replication.shard_of(instance.id)):
            return
        self.paused.discard(instance.id)  # first: a pass running meanwhile resumes nothing twice
        paths = [db.path for db in self.databases(instance)]
        if len(await self.replication.resume(paths)) < len(paths):
            self.paused.add(instance.id)  # the next pass tries again
            log.warning("replication of %s was not resumed at once", instance.id)

    async def reconcile(self, rows: Sequence[Instance], listed: Sequence[ReplicatedDb]) -> None:
        self._listed = {db.instance_id for db in listed}
        if not self.settings.replication:
            return
        running = self._running()
        if not running:
            return
        await self._read_closed(running, listed)
        self.paused &= self._listed
        of = self.replication.shard_of
        rows = [row for row in rows if of(row.id) in running]
        for row in rows:
            if not not_running(row):
                self._quiet.discard(row.id)
                if row.id in self.paused:
                    await self.awake(row)
        idle = [r for r in rows if r.id in self._listed and r.id not in self.paused]
        idle = [r for r in idle if not_running(r)]
        if idle:
            await self._pause(await self._still_idle(idle))

    async def _read_closed(self, running: set[int], listed: Sequence[ReplicatedDb]) -> None:
        """Add to `paused` the listed instances of the processes new to this control plane
        whose databases their Litestream lists, none of them replicating (an adopted one keeps
        what the control plane before paused; one started just now opened them all before its
        control socket answered). A process whose `/list` did not answer is read again at the
        next pass."""
        shards = sorted(self._unread & running)
        if not shards:
            return
        parts = await asyncio.gather(*(self.replication.processes[k].status() for k in shards))
        of = self.replication.shard_of
        groups: dict[str, list[str]] = {}  # instance id -> its listed databases
        for db in listed:
            groups.setdefault(db.instance_id, []).append(str(db.path))
        for shard, status in zip(shards, parts, strict=True):
            if not status:
                continue  # not answered (a process that lists nothing runs no more)
            self._unread.discard(shard)
            for key, paths in groups.items():
                if of(key) == shard and all(
                    p in status and not status[p].replicating for p in paths
                ):
                    self.paused.add(key)

    async def _still_idle(self, rows: list[Instance]) -> list[Instance]:
        ids = [row.id for row in rows]
        async with self.db.read() as session:
            now = (
                await session.exec(
                    select(Instance.id, Instance.pid, Instance.status, Instance.desired).where(
                        col(Instance.id).in_(ids)
                    )
                )
            ).all()
        idle = {key for key, pid, status, desired in now if _idle(pid, status, desired)}
        return [row for row in rows if row.id in idle]

    async def _pause(self, rows: list[Instance]) -> None:
        """Pause each instance of `rows` whose databases Litestream ships up to their last
        transaction first (a sync it waits for: a database paused before its first snapshot
        reached the replica would stay unreplicated while it sleeps; not asked again of one
        paused before and not run since, as after a restart of Litestream); the others are
        left to a later pass. `PAUSE_CONCURRENCY` instances at a time."""
        slots = asyncio.Semaphore(PAUSE_CONCURRENCY)

        async def pause(row: Instance) -> None:
            paths = [db.path for db in self.databases(row)]
            async with slots:
                if not paths or (row.id not in self._quiet and not await self._shipped(paths)):
                    return
                if len(await self.replication.pause(paths)) == len(paths):
                    self.paused.add(row.id)
                    self._quiet.add(row.id)

        await asyncio.gather(*(pause(row) for row in rows))

    async def _shipped(self, paths: list[Path]) -> bool:
        for path in paths:
            synced = await self.replication.sync(path, wait=True)
            if synced is None or not synced.replicated_txid >= synced.txid > 0:
                return False
        return True
