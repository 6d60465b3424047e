"""Restore drills: a replica is only as good as the database it rebuilds, so rebuild it.

A drill restores the latest replicated state of every database of an instance (its current
generation) into a scratch folder, `PF_DATA_DIR/backup-work/drill-ID/`, with `litestream
restore`, and runs `PRAGMA integrity_check` on each. The instance itself is not touched, nor
woken: a drill reads the store only (and the size of the instance's databases, for the free
space it needs, with `lstat` through `safe_fs`: a tenant's link is never followed). The outcome
goes to the instance's `BackupState`:

- `ok`: every database rebuilt and passed its check;
- `corrupt`: one rebuilt, but fails its check. The replica cannot be trusted from here on, so
  the instance moves to a new replica generation (`Replicas.advance`): Litestream starts it with
  a full snapshot of the databases as they are, which the next drill checks in turn. Earlier
  generations stay readable for point-in-time restores (which check what they rebuild too);
- `error`: the drill could not run to the end (store unreachable, Litestream failed, no disk
  space); it is tried again after `RETRY_AFTER_S`.

The backups loop starts at most one drill at a time for the whole fleet (`maybe_start`), back
to back while some are due: the instance whose drill is most overdue, that is, never drilled,
drilled in an older generation, or drilled longer ago than `PF_REPLICA_DRILL_INTERVAL_H`.
Owners can drill now through the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from control_plane import safe_fs
from control_plane.backups.archive import integrity_problem
from control_plane.backups.models import BackupState
from control_plane.backups.replication import ReplicatedDb, ReplicationError
from control_plane.db.models import Account, Instance, utcnow
from control_plane.lifecycle import InstanceState
from control_plane.services.errors import Conflict
from control_plane.specs import instance_layout

if TYPE_CHECKING:
    from control_plane.backups.service import BackupService

log = logging.getLogger(__name__)

RETRY_AFTER_S = 900.0  # after an error, or when there was nothing to drill yet
LOOK_EVERY_S = 60.0  # how often the loop looks for a due drill when the last look found none
SPACING_S = 5.0  # the pause between two drills, so that a fleet's first round is spread out
_SPARE_BYTES = 100 * 1024 * 1024  # free disk to keep beside the rebuilt databases


@dataclass(frozen=True)
class DrillOutcome:
    status: str  # ok | corrupt | error
    problem: str
    generation: int
    seconds: float
    at: datetime


def is_due(
    instance: Instance, state: BackupState | None, interval: timedelta, now: datetime
) -> bool:
    """Whether the instance's replica should be drilled: never drilled, last drill failed to
    run, drilled in an older generation, or longer ago than `interval`. A replica that passed
    its drill and has not grown since (the instance slept all along) is not drilled again, so
    a fleet of sleeping instances costs no drills."""
    if state is None or state.drill_at is None or state.drill_status == "error":
        return True
    if state.drill_generation != state.replica_generation:
        return True
    asleep = instance.status == InstanceState.HIBERNATED and instance.hibernated_at
    if state.drill_status == "ok" and asleep and asleep <= state.drill_at:
        return False
    return now - state.drill_at >= interval


def last_drill(state: BackupState | None) -> DrillOutcome | None:
    """The last drill recorded in an instance's backup state, if any."""
    if state is None or state.drill_at is None or state.drill_status is None:
        return None
    return DrillOutcome(
        state.drill_status,
        state.drill_problem,
        state.drill_generation or 0,
        state.drill_seconds or 0.0,
        state.drill_at,
    )


class NothingToDrill(Exception):
    """The instance has no replica in its current generation yet."""


class RestoreDrills:
    def __init__(self, service: BackupService) -> None:
        self.service = service
        self.settings = service.settings
        self.db = service.db
        self.running: set[str] = set()
        self._not_before: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None
        self._looked_at = -LOOK_EVERY_S
        self._found_one = False
        self._finished_at = -SPACING_S

    # ----- choosing

    def due(self, instance: Instance, state: BackupState | None) -> bool:
        if time.monotonic() < self._not_before.get(instance.id, 0.0):
            return False
        interval = timedelta(hours=self.settings.replica_drill_interval_h)
        return is_due(instance, state, interval, utcnow())

    def wants_look(self) -> bool:
        """Whether the loop should call `maybe_start` now: no drill runs, and the last look
        found one (drills run back to back while some are due) or was `LOOK_EVERY_S` ago."""
        if self.settings.replica_drill_interval_h <= 0 or not self.settings.replication:
            return False
        if self._task is not None and not self._task.done():
            return False
        now = time.monotonic()
        if self._found_one:
            return now - self._finished_at >= SPACING_S
        return now - self._looked_at >= LOOK_EVERY_S

    def maybe_start(self, rows: Sequence[Instance], states: dict[str, BackupState]) -> None:
        """Start the most overdue drill in the background, unless one is running."""
        if not self.wants_look():
            return
        self._looked_at = time.monotonic()
        candidates = [
            row
            for row in rows
            if row.hold is None
            and row.started_at is not None
            and row.id not in self.service.busy
            and self.due(row, states.get(row.id))
        ]
        self._found_one = bool(candidates)
        if not candidates:
            return

        def last(row: Instance) -> datetime:
            state = states.get(row.id)
            return state.drill_at if state and state.drill_at else row.created_at

        chosen = min(candidates, key=last)
        self._task = asyncio.create_task(self._background(chosen), name=f"drill {chosen.id}")

    async def _background(self, instance: Instance) -> None:
        try:
            with contextlib.suppress(NothingToDrill, Conflict):
                await self.run(instance)
        finally:
            self._finished_at = time.monotonic()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    # ----- drilling

    async def drill_now(self, account: Account, name: str) -> DrillOutcome:
        """The owner's "check my replica now" (409 while another drill of it runs)."""
        instance = await self.service.instances.get(account, name)
        if not self.settings.replication:
            raise Conflict("continuous replication is off on this server (PF_REPLICATION)")
        try:
            return await self.run(instance)
        except NothingToDrill as err:
            raise Conflict(str(err)) from err

    async def run(self, instance: Instance) -> DrillOutcome:
        """Drill the instance's replica, record the outcome, and start a new generation when
        the replica rebuilt a corrupt database."""
        if instance.id in self.running:
            raise Conflict("a drill of this instance is running; try again when it is done")
        self.running.add(instance.id)
        try:
            return await self._run(instance)
        finally:
            self.running.discard(instance.id)

    async def _run(self, instance: Instance) -> DrillOutcome:
        replicas = self.service.replicas
        generation = await replicas.generation(instance.id)
        windows = await replicas.windows(instance)
        if not any(w.generation == generation for w in windows):
            self._not_before[instance.id] = time.monotonic() + RETRY_AFTER_S
            raise NothingToDrill(f"{instance.name} has no replica to check yet")
        dbs = await replicas.databases(instance, generation)
        work = self.settings.backup_work_dir / f"drill-{instance.id}"
        started = time.monotonic()
        try:
            status, problem = await self._rebuild_and_check(dbs, work)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        outcome = DrillOutcome(status, problem, generation, time.monotonic() - started, utcnow())
        await self._record(instance.id, outcome)
        if status == "error":
            self._not_before[instance.id] = time.monotonic() + RETRY_AFTER_S
            log.warning("restore drill of %s could not run: %s", instance.id, problem)
        elif status == "corrupt":
            log.error("restore drill of %s: the replica is corrupt: %s", instance.id, problem)
            if await replicas.generation(instance.id) == generation:
                await replicas.advance(instance.id, f"drill: {problem[:200]}")
                await self.service.apply_replication()
        return outcome

    async def _rebuild_and_check(self, dbs: list[ReplicatedDb], work: Path) -> tuple[str, str]:
        await asyncio.to_thread(_fresh_folder, work)
        for db in dbs:
            root = instance_layout(self.settings, db.instance_id).root
            lacking = await asyncio.to_thread(_lacking_space, root, db.path, work)
            if lacking:
                return "error", f"not enough free disk to rebuild {db.name} ({lacking})"
            output = work / db.name
            try:
                await self.service.replication.restore(db, output, None)
            except ReplicationError as err:
                return "error", str(err)
            problem = await asyncio.to_thread(integrity_problem, output)
            if problem is not None:
                return "corrupt", f"{db.name}: {problem}"
            output.unlink(missing_ok=True)
        return "ok", ""

    async def _record(self, instance_id: str, outcome: DrillOutcome) -> None:
        async with self.db() as session:
            state = await session.get(BackupState, instance_id) or BackupState(
                instance_id=instance_id
            )
            state.drill_at = outcome.at
            state.drill_status = outcome.status
            state.drill_problem = outcome.problem[:2000]
            state.drill_generation = outcome.generation
            state.drill_seconds = round(outcome.seconds, 3)
            session.add(state)
            await session.commit()


def _fresh_folder(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)


def _lacking_space(root: Path, db: Path, work: Path) -> str | None:
    """Why `work` cannot hold a rebuilt copy of `db` (inside the instance folder `root`; its
    own regular file only) (None when it can)."""
    needed = _SPARE_BYTES
    with contextlib.suppress(OSError, ValueError):
        root_fd = safe_fs.open_anchor(root)
        try:
            info = safe_fs.lstat_at(root_fd, db.relative_to(root).as_posix())
        finally:
            os.close(root_fd)
        if info is not None and stat.S_ISREG(info.st_mode):
            needed += info.st_size
    free = shutil.disk_usage(work).free
    return None if free >= needed else f"{needed} bytes needed, {free} free"
