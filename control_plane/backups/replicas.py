"""An instance's replicas as a whole: its current generation, the point-in-time window across
its generations, moving it to a new generation, and deleting generations that left the window.

The layout of generations is in `generations`; this module reads the store and the
`BackupState` rows for it. Used by the backups service (windows, cleanup), restores (which
start a new generation and read old ones) and drills (which start one when a replica fails).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from control_plane.backups import generations
from control_plane.backups.generations import Window
from control_plane.backups.models import BackupState
from control_plane.backups.replication import ReplicatedDb
from control_plane.backups.store import BackupStore, ObjectInfo, StoreError
from control_plane.db.models import Instance, utcnow

if TYPE_CHECKING:
    from control_plane.backups.service import BackupService

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0  # per instance with old generations


class Replicas:
    def __init__(self, service: BackupService) -> None:
        self.service = service
        self.settings = service.settings
        self.db = service.db
        self._pruned_at: dict[str, float] = {}
        # instance id -> Litestream's time of each starting file listed last (`_litestream_times`)
        self._times: dict[str, dict[ObjectInfo, datetime]] = {}
        # instance id -> when Litestream last reported all its databases shipped (`window`)
        self._caught_up_at: dict[str, datetime] = {}

    async def generation(self, instance_id: str) -> int:
        async with self.db() as session:
            state = await session.get(BackupState, instance_id)
        return state.replica_generation if state else 0

    async def databases(
        self, instance: Instance, generation: int | None = None
    ) -> list[ReplicatedDb]:
        """The instance's databases in `generation` (None: its current one)."""
        if generation is None:
            generation = await self.generation(instance.id)
        return self.service.databases(instance, generation)

    async def windows(self, instance: Instance) -> list[Window]:
        """The window of every generation of the instance's databases, oldest first (empty
        when it has no replica yet, or the store cannot be read)."""
        dbs = self.service.databases(instance)
        if not dbs:
            return []
        names = [db.name for db in dbs]
        prefix = generations.instance_prefix(instance.id)
        try:
            objects = await asyncio.to_thread(self.service.store.list, prefix)
            objects = await asyncio.to_thread(self._litestream_times, instance.id, names, objects)
        except StoreError as err:
            log.info("listing the replicas of %s failed: %s", instance.id, err)
            return []
        return generations.windows(instance.id, names, objects)

    def _litestream_times(
        self, instance_id: str, db_names: list[str], objects: list[ObjectInfo]
    ) -> list[ObjectInfo]:
        """`objects` with the files that windows start at (`generations.starting_files`)
        timed as Litestream times them (`BackupStore.replica_times`; those gone meanwhile
        left out). Blocking; the times are kept per listed object, so each file is asked for
        once."""
        known = self._times.get(instance_id, {})
        starting = generations.starting_files(instance_id, db_names, objects)
        timed = {o: known[o] for o in starting if o in known}
        asked = self.service.store.replica_times([o for o in starting if o not in timed])
        timed.update((o, asked[o.key]) for o in starting if o.key in asked)
        self._times[instance_id] = timed
        gone = {o.key for o in starting if o not in timed}
        return [
            replace(o, modified=timed[o]) if o in timed else o for o in objects if o.key not in gone
        ]

    async def window(self, instance: Instance) -> tuple[datetime | None, datetime | None]:
        """The point-in-time window (from, to) across the instance's generations: from the
        start of the oldest one kept to the newest replicated moment: now, when Litestream
        reports every database caught up, else the last moment it did (what was committed
        before it was shipped in files made before it), so that a moment once advertised
        stays in the window while the next writes are on their way."""
        found = await self.windows(instance)
        if not found:
            return None, None
        start = min(w.start for w in found)
        end = max(w.end for w in found)
        if instance.hold is None and self.settings.replication and await self._caught_up(instance):
            self._caught_up_at[instance.id] = utcnow()
        caught_up_at = self._caught_up_at.get(instance.id)
        if caught_up_at is not None:
            end = max(end, caught_up_at)
        return start.astimezone(UTC), end.astimezone(UTC)

    async def _caught_up(self, instance: Instance) -> bool:
        """Whether Litestream reports every database of the instance fully shipped (a paused
        instance's were, by the pause's last sync: `control_plane.backups.pauses`)."""
        if instance.id in self.service.pauses.paused:
            return True
        for db in self.service.databases(instance):
            synced = await self.service.replication.sync(db.path, wait=False)
            if synced is None or not synced.replicated_txid >= synced.txid > 0:
                return False
        return True

    async def covering(self, instance: Instance, at: datetime) -> list[ReplicatedDb]:
        """The instance's databases in the generation that holds the moment `at`."""
        window = generations.covering(await self.windows(instance), at)
        generation = window.generation if window else await self.generation(instance.id)
        return await self.databases(instance, generation)

    async def advance(self, instance_id: str, why: str) -> int:
        """Close the instance's current generation and start the next one: Litestream's local
        state of the instance is dropped, and the next `apply_replication` replicates its
        databases into the new generation, beginning with a full snapshot."""
        async with self.db() as session:
            state = await session.get(BackupState, instance_id) or BackupState(
                instance_id=instance_id
            )
            state.replica_generation += 1
            generation = state.replica_generation
            session.add(state)
            await session.commit()
        self.service.replication.forget(instance_id)
        log.info("replicas of %s: generation %d starts (%s)", instance_id, generation, why)
        return generation

    async def prune(self, states: dict[str, BackupState]) -> None:
        """Delete the generations that left the point-in-time window (each instance with old
        generations at most once per `PRUNE_EVERY_S`)."""
        now = asyncio.get_running_loop().time()
        retention = timedelta(hours=self.settings.replication_retention_h)
        for instance_id, state in states.items():
            if state.replica_generation == 0:
                continue
            if now - self._pruned_at.get(instance_id, -PRUNE_EVERY_S) < PRUNE_EVERY_S:
                continue
            self._pruned_at[instance_id] = now
            cutoff = utcnow() - retention
            try:
                await asyncio.to_thread(
                    delete_stale, self.service.store, instance_id, state.replica_generation, cutoff
                )
            except StoreError as err:
                log.info("pruning old replicas of %s failed: %s", instance_id, err)


def delete_stale(store: BackupStore, instance_id: str, current: int, cutoff: datetime) -> list[int]:
    """Delete the generations before `current` whose newest object is older than `cutoff`;
    return them. Blocking."""
    objects = store.list(generations.instance_prefix(instance_id))
    doomed = generations.stale(instance_id, objects, current, cutoff)
    for generation, keys in doomed.items():
        for key in keys:
            store.delete(key)
        log.info("replicas of %s: generation %d deleted", instance_id, generation)
    return sorted(doomed)
