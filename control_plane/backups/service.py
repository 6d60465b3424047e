"""Backups as a service: snapshots (manual and scheduled), retention, downloads, schedules,
the replication supervisor's target list, and the operators' overview. Restores
(`restores`), replica generations (`replicas`) and restore drills (`drills`) are parts of the
same service in their own modules.

Rules kept here:
- never two operations (snapshot or restore) at once on one instance: a second one is refused
  with 409 (a scheduled one is skipped);
- at most `PF_BACKUP_CONCURRENCY` scheduled snapshots run at once;
- a snapshot row is `good` only after the store verified the upload; a failure is recorded with
  its reason, and a multipart upload it left is aborted (now, or by the periodic cleanup);
- an instance that is not running is snapshotted from its files, without waking it, and a
  scheduled snapshot is skipped when its folder is unchanged since its last good snapshot;
- after a good snapshot, retention prunes older good ones (never the newest);
- an instance folder is its tenant's: snapshots never follow a link in it (see `archive`), a
  database that is not the instance's own regular file fails the snapshot (422, saying which),
  other files that are not are left out (named in the good snapshot's `reason`), and an
  instance whose databases are not its own regular files is not replicated (see
  `replication.replication_refusal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import ColumnElement
from sqlmodel import col, select

from control_plane import safe_fs
from control_plane.backups import jobs
from control_plane.backups.archive import FolderRefused, Manifest, build_archive, fingerprint
from control_plane.backups.drills import RestoreDrills
from control_plane.backups.models import BackupSnapshot, BackupState
from control_plane.backups.pauses import ReplicationPauses
from control_plane.backups.replicas import Replicas
from control_plane.backups.replication import ReplicatedDb, ReplicationError, ReplicationSupervisor
from control_plane.backups.retention import Candidate, Policy, to_keep
from control_plane.backups.schedule import Schedule, ScheduleError, parse, validate_for_tenant
from control_plane.backups.schemas import FleetBackupPublic, SchedulePublic
from control_plane.backups.store import StoreError, make_store, snapshot_key
from control_plane.db.engine import SessionFactory, update_row
from control_plane.db.models import Account, Instance, new_id, utcnow
from control_plane.engines.base import EngineError
from control_plane.engines.registry import EngineRegistry
from control_plane.lifecycle import InstanceState
from control_plane.services.errors import Conflict, Invalid, NotFound, ServiceError
from control_plane.services.instances import InstanceService, Reconcile
from control_plane.settings import Settings
from control_plane.specs import instance_layout

if TYPE_CHECKING:
    from control_plane.backups.restores import Restorer
    from control_plane.scheduler import Scheduler

log = logging.getLogger(__name__)

JOB_PREFIX = "backup:"
STAMP = "%Y%m%dT%H%M%SZ"
CLEANUP_EVERY_S = 60.0
FAILED_ROWS_KEPT = 10
QUIET_TICK_S = 10.0  # the longest time between two passes of the backups loop
FOLDER_CHECK_EVERY_S = 10.0  # how often replicated folders are checked even if nothing changed
GONE = (InstanceState.DELETING.value, InstanceState.DELETED.value)


class BackupFailed(ServiceError):
    """The backup store (or the copy) failed; the snapshot is recorded as failed."""

    status = 502
    code = "backup_failed"


class SnapshotRefused(ServiceError):
    """The instance folder holds, where a database must be, something the control plane does
    not touch (a link, a FIFO, someone else's file); the snapshot is recorded as failed."""

    status = 422
    code = "snapshot_refused"


def _live() -> ColumnElement[bool]:
    return col(Instance.status).not_in(GONE)


class BackupService:
    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        engines: EngineRegistry,
        instances: InstanceService,
        reconciler: Reconcile,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engines = engines
        self.instances = instances
        self.reconciler = reconciler
        self.store = make_store(settings)
        self.replication = ReplicationSupervisor(settings, self.store)
        # databases of instances that do not run are paused in Litestream (pauses.py)
        self.pauses = ReplicationPauses(settings, db, self.replication, self.databases)
        self._targets: list[ReplicatedDb] = []
        self.policy = Policy(
            settings.backup_keep_last,
            settings.backup_keep_daily,
            settings.backup_keep_weekly,
            settings.backup_keep_monthly,
        )
        self.busy: dict[str, str] = {}  # instance id -> "snapshot" | "restore"
        self._slots = asyncio.Semaphore(settings.backup_concurrency)
        self._scheduler: Scheduler | None = None
        self._task: asyncio.Task[None] | None = None
        self._kicks: set[asyncio.Task[None]] = set()
        self._last_cleanup = 0.0
        self._last_folder_check = 0.0
        # the fleet the last pass applied
        self._applied: tuple[tuple[object, ...], ...] | None = None
        # instance id -> the schedule its snapshot job was made from (None: the default);
        # read from the scheduler once, then kept in step with what `_sync_jobs` changes
        self._job_schedules: dict[str, str | None] | None = None
        self._job_names: dict[str, str] = {}
        from control_plane.backups.restores import Restorer

        self.restorer: Restorer = Restorer(self)
        self.replicas = Replicas(self)
        self.drills = RestoreDrills(self)

    # ----- running

    async def start(self, scheduler: Scheduler) -> None:
        """Recover interrupted work, then keep replication and schedules in line (a loop)."""
        self._scheduler = scheduler
        scheduler.persist_to(self.settings.data_dir / "scheduler.db")
        jobs.register(self)
        try:
            await asyncio.to_thread(self.store.ensure_ready)
        except StoreError as err:
            log.error("backup store %s is not usable yet: %s", self.store.describe(), err)
        await self.restorer.recover()
        await self._fail_interrupted_snapshots()
        self._task = asyncio.create_task(self._loop(), name="backups")

    async def close(self) -> None:
        """Stop the loop; Litestream keeps running (the next control plane adopts it)."""
        jobs.register(None)
        await self.drills.close()
        for task in (self._task, *self._kicks):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.replication.release()

    async def _loop(self) -> None:
        """A pass after every change the reconciler makes (at most one per `spacing`), and
        every `QUIET_TICK_S` anyway (a Litestream that died is restarted then)."""
        spacing = max(0.5, min(2.0, self.settings.reconcile_interval_s))
        while True:
            changed = self.reconciler.next_change()
            try:
                await self.tick()
            except Exception:  # the loop must outlive any one bad pass
                log.exception("backups pass failed")
            await asyncio.sleep(spacing)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), QUIET_TICK_S)

    async def tick(self) -> None:
        """One pass: replication targets, scheduler jobs, a restore drill when one is due,
        and (now and then) cleanup.

        Targets and jobs are worked out again only when what they derive from changed (one
        light query tells), and targets also every `FOLDER_CHECK_EVERY_S` (their folders are
        checked then, see `replication.replication_refusal`); otherwise the pass only
        restarts Litestream if it died. A fleet of a thousand sleeping instances costs one
        query every couple of seconds, and a few `lstat` per instance every
        `FOLDER_CHECK_EVERY_S`."""
        fleet = await self._fleet_key()
        rows: Sequence[Instance] | None = None
        now = asyncio.get_running_loop().time()
        if fleet != self._applied:
            rows = await self._live_instances()
            await self.apply_replication(rows)
            await self._sync_jobs({str(k[0]): None if k[5] is None else str(k[5]) for k in fleet})
            self._applied = fleet
        elif now - self._last_folder_check >= FOLDER_CHECK_EVERY_S:
            rows = await self._live_instances()
            await self.apply_replication(rows)
        else:
            try:
                await self.replication.refresh()
            except ReplicationError as err:
                log.error("replication is not running: %s", err)
        if now - self._last_cleanup >= CLEANUP_EVERY_S:
            self._last_cleanup = now
            rows = rows if rows is not None else await self._live_instances()
            await self._cleanup(rows)
        if rows is not None:
            await self.pauses.reconcile(rows, self._targets)
        if self.drills.wants_look():
            rows = rows if rows is not None else await self._live_instances()
            self.drills.maybe_start(rows, await self.states())

    async def _fleet_key(self) -> tuple[tuple[object, ...], ...]:
        """What replication targets and snapshot jobs derive from, for every live instance."""
        query = (
            sa.select(
                col(Instance.id),
                col(Instance.engine),
                col(Instance.name),
                col(Instance.hold),
                col(Instance.started_at).is_(None),
                col(BackupState.schedule),
                # no state row and a new one (a first drill's) are the same generation 0: a
                # state row appearing changes neither the targets nor the jobs
                sa.func.coalesce(col(BackupState.replica_generation), 0),
            )
            .outerjoin(BackupState, col(BackupState.instance_id) == col(Instance.id))
            .where(_live())
            .order_by(col(Instance.id))
        )
        async with self.db() as session:
            return tuple((await session.execute(query)).tuples().all())

    async def _live_instances(self) -> Sequence[Instance]:
        async with self.db() as session:
            return (await session.exec(select(Instance).where(_live()))).all()

    # ----- replication

    def instance_uid(self, instance: Instance) -> int | None:
        """The uid the instance's files belong to and its databases are copied as; None when
        the instance runs as the control plane's own user."""
        if os.geteuid() == 0 and self.settings.instance_users and instance.uid is not None:
            return instance.uid
        return None

    def databases(self, instance: Instance, generation: int = 0) -> list[ReplicatedDb]:
        """The databases of an instance, as its engine lays them out, replicated into
        `generation`."""
        try:
            engine = self.engines.get(instance.engine)
        except EngineError:
            return []
        layout = instance_layout(self.settings, instance.id)
        return [ReplicatedDb(instance.id, p, p.name, generation) for p in engine.databases(layout)]

    async def apply_replication(self, rows: Sequence[Instance] | None = None) -> None:
        """Make Litestream replicate the databases of every live instance not held, each into
        its current replica generation."""
        if rows is None:
            rows = await self._live_instances()
        self._last_folder_check = asyncio.get_running_loop().time()
        targets: list[ReplicatedDb] = []
        if self.settings.replication:
            states = await self.states()
            candidates: list[tuple[Path, list[ReplicatedDb], int]] = []
            for row in rows:
                # from its first start on: never in the middle of its first migrations
                if row.hold is None and row.name is not None and row.started_at is not None:
                    state = states.get(row.id)
                    dbs = self.databases(row, state.replica_generation if state else 0)
                    uid = self.instance_uid(row)
                    root = instance_layout(self.settings, row.id).root
                    candidates.append((root, dbs, uid if uid is not None else os.geteuid()))
            # paused databases are closed in Litestream and their instances run nothing
            targets = await self.replication.admitted(candidates, self.pauses.paused)
            targets = await self._after_swaps(targets)
        self._targets = targets
        try:
            await self.replication.apply(targets)
        except ReplicationError as err:
            log.error("replication is not running: %s", err)

    async def _after_swaps(self, targets: list[ReplicatedDb]) -> list[ReplicatedDb]:
        """`targets`, with the instances whose database file was swapped under Litestream
        (`ReplicationSupervisor.replaced`: a restore inside the instance) moved to a new
        replica generation, which Litestream starts from the file as it is now."""
        awake = [db for db in targets if db.instance_id not in self.pauses.paused]
        swapped = await asyncio.to_thread(self.replication.replaced, awake)
        moved: dict[str, int] = {}
        for instance_id in dict.fromkeys(db.instance_id for db in swapped):
            why = "its database was replaced while it ran (a restore inside the instance)"
            moved[instance_id] = await self.replicas.advance(instance_id, why)
        return [
            dataclasses.replace(db, generation=moved[db.instance_id])
            if db.instance_id in moved
            else db
            for db in targets
        ]

    def kick_replication(self, instance: Instance) -> None:
        """Ship the instance's recent writes now (in the background)."""

        async def run() -> None:
            for db in self.databases(instance):
                await self.replication.sync(db.path, wait=True)

        task = asyncio.create_task(run())
        self._kicks.add(task)
        task.add_done_callback(self._kicks.discard)

    # ----- schedules

    def schedule_of(self, instance: Instance, state: BackupState | None) -> Schedule:
        text = state.schedule if state and state.schedule else self.settings.backup_schedule
        return self._parsed(instance.id, text)

    @staticmethod
    def _parsed(instance_id: str, text: str) -> Schedule:
        try:
            return parse(text, instance_id)
        except ScheduleError:
            log.error("invalid schedule %r for %s; using @daily", text, instance_id)
            return parse("@daily", instance_id)

    async def state_of(self, instance_id: str) -> BackupState | None:
        async with self.db() as session:
            return await session.get(BackupState, instance_id)

    async def states(self) -> dict[str, BackupState]:
        async with self.db() as session:
            return {s.instance_id: s for s in (await session.exec(select(BackupState))).all()}

    async def _schedules(self) -> dict[str, str | None]:
        """Live instance id -> its own schedule (None: the fleet default)."""
        query = (
            sa.select(col(Instance.id), col(BackupState.schedule))
            .outerjoin(BackupState, col(BackupState.instance_id) == col(Instance.id))
            .where(_live())
        )
        async with self.db() as session:
            return dict((await session.execute(query)).tuples().all())

    async def _sync_jobs(self, schedules: dict[str, str | None]) -> None:
        """One snapshot job per live instance (`schedules`: id -> its own schedule), made
        again only for an instance whose schedule changed since the last call (the jobs are
        read from the scheduler once: the first call after a start compares them all)."""
        if self._scheduler is None:
            return
        if self._job_schedules is None:
            existing = self._scheduler.persistent_jobs()
            self._job_names = {
                job_id.removeprefix(JOB_PREFIX): name
                for job_id, (name, _) in existing.items()
                if job_id.startswith(JOB_PREFIX)
            }
            self._job_schedules = {}
        done = self._job_schedules
        for instance_id, text in schedules.items():
            if instance_id in done and done[instance_id] == text:
                continue
            default = self.settings.backup_schedule
            schedule = self._parsed(instance_id, text if text else default)
            name = f"snapshot {schedule.text}"
            if self._job_names.get(instance_id) != name:
                trigger = schedule.trigger(start=utcnow())
                job_id = JOB_PREFIX + instance_id
                self._scheduler.add_persistent(
                    job_id, trigger, jobs.SNAPSHOT_JOB, [instance_id], name
                )
                self._job_names[instance_id] = name
            done[instance_id] = text
        for instance_id in [key for key in self._job_names if key not in schedules]:
            self._scheduler.remove(JOB_PREFIX + instance_id)
            del self._job_names[instance_id]
            done.pop(instance_id, None)

    def next_run(self, instance_id: str) -> datetime | None:
        if self._scheduler is None:
            return None
        return self._scheduler.next_run_time(JOB_PREFIX + instance_id)

    async def schedule_public(self, instance: Instance) -> SchedulePublic:
        async with self.db() as session:
            state = await session.get(BackupState, instance.id)
        schedule = self.schedule_of(instance, state)
        return SchedulePublic(
            schedule=schedule.text,
            default=not (state and state.schedule),
            next_run=self.next_run(instance.id),
        )

    async def set_schedule(self, account: Account, name: str, text: str | None) -> SchedulePublic:
        """Set the instance's schedule (None: the fleet default). Owners may not go below
        `PF_BACKUP_MIN_INTERVAL_S`; operators may."""
        instance = await self.instances.get(account, name)
        if text is not None:
            try:
                if account.is_operator:
                    parse(text, instance.id)
                else:
                    validate_for_tenant(text, instance.id, self.settings.backup_min_interval_s)
            except ScheduleError as err:
                raise Invalid(str(err), field="schedule") from err
        async with self.db() as session:
            state = await session.get(BackupState, instance.id) or BackupState(
                instance_id=instance.id
            )
            state.schedule = text.strip() if text else None
            session.add(state)
            await session.commit()
        await self._sync_jobs(await self._schedules())
        return await self.schedule_public(instance)

    # ----- snapshots

    async def snapshots(self, instance_id: str) -> Sequence[BackupSnapshot]:
        async with self.db() as session:
            return (
                await session.exec(
                    select(BackupSnapshot)
                    .where(BackupSnapshot.instance_id == instance_id)
                    .order_by(col(BackupSnapshot.created_at).desc())
                    .limit(500)
                )
            ).all()

    async def owned_snapshot(
        self, account: Account, name: str, snapshot_id: str
    ) -> tuple[Instance, BackupSnapshot]:
        instance = await self.instances.get(account, name)
        async with self.db() as session:
            row = await session.get(BackupSnapshot, snapshot_id)
        if row is None or row.instance_id != instance.id:
            raise NotFound(f"{name} has no backup {snapshot_id!r}")
        return instance, row

    async def create(self, account: Account, name: str) -> BackupSnapshot:
        """Snapshot now (409 while another operation runs on the instance)."""
        instance = await self.instances.get(account, name)
        return await self.snapshot(instance, "manual", f"account:{account.id}")

    async def run_scheduled(self, instance_id: str) -> None:
        """The scheduled snapshot: skipped when busy or when nothing changed since the last."""
        async with self._slots:
            async with self.db() as session:
                instance = await session.get(Instance, instance_id)
                state = await session.get(BackupState, instance_id)
            if instance is None or instance.status in GONE or instance.hold:
                return
            if instance_id in self.busy:
                log.info("scheduled snapshot of %s skipped: %s running", instance_id, "operation")
                return
            if await self._unchanged(instance, state):
                await self._checked(instance_id, None)
                return
            with contextlib.suppress(ServiceError):
                await self.snapshot(instance, "scheduled", "scheduler")

    async def _unchanged(self, instance: Instance, state: BackupState | None) -> bool:
        """Whether the instance's last good snapshot still holds all its data: it was taken
        after the instance went to sleep (nothing runs to write while it sleeps; the files
        themselves may still move, as Litestream checkpoints the WAL it holds), or the
        folder's fingerprint has not changed since."""
        asleep = instance.status == InstanceState.HIBERNATED
        asleep_since = instance.hibernated_at if asleep else None
        if asleep_since is not None and await self._has_good(instance.id, since=asleep_since):
            return True
        if state is None or state.last_fingerprint is None:
            return False
        layout = instance_layout(self.settings, instance.id)
        now_print = await asyncio.to_thread(fingerprint, layout.root, layout.log_file.name)
        return state.last_fingerprint == now_print and await self._has_good(instance.id)

    async def _has_good(self, instance_id: str, since: datetime | None = None) -> bool:
        query = select(BackupSnapshot.id).where(
            BackupSnapshot.instance_id == instance_id, BackupSnapshot.status == "good"
        )
        if since is not None:
            query = query.where(col(BackupSnapshot.created_at) >= since)
        async with self.db() as session:
            return (await session.exec(query)).first() is not None

    async def _checked(self, instance_id: str, print_: str | None) -> None:
        async with self.db() as session:
            state = await session.get(BackupState, instance_id) or BackupState(
                instance_id=instance_id
            )
            if print_ is not None:
                state.last_fingerprint = print_
            state.last_checked_at = utcnow()
            session.add(state)
            await session.commit()

    async def _update(self, snapshot_id: str, **fields: object) -> None:
        await update_row(self.db, BackupSnapshot, snapshot_id, **fields)

    async def snapshot(self, instance: Instance, trigger: str, actor: str) -> BackupSnapshot:
        """Take, upload and verify one snapshot of `instance`; raise `BackupFailed` (after
        recording the failure) when it cannot."""
        if instance.id in self.busy or instance.hold:
            raise Conflict(f"a {self.busy.get(instance.id, 'restore')} of this instance is running")
        self.busy[instance.id] = "snapshot"
        try:
            return await self._snapshot(instance, trigger, actor)
        finally:
            self.busy.pop(instance.id, None)

    async def _snapshot(self, instance: Instance, trigger: str, actor: str) -> BackupSnapshot:
        engine = self.engines.get(instance.engine)
        layout = instance_layout(self.settings, instance.id)
        created = utcnow()
        snap_id = new_id()
        row = BackupSnapshot(
            id=snap_id,
            instance_id=instance.id,
            trigger=trigger,
            actor=actor,
            key=snapshot_key(instance.id, created.strftime(STAMP), snap_id),
            engine=instance.engine,
            version=instance.version,
            created_at=created,
        )
        async with self.db() as session:
            session.add(row)
            await session.commit()
        manifest = Manifest(
            instance.id,
            instance.name or instance.former_name,
            instance.engine,
            instance.version,
            created.isoformat(),
            [],
        )
        loop = asyncio.get_running_loop()
        uid = self.instance_uid(instance)

        def started(upload_id: str) -> None:
            asyncio.run_coroutine_threadsafe(
                self._update(snap_id, upload_id=upload_id), loop
            ).result(30)

        def build_and_upload() -> tuple[int, str, str]:
            work = self.settings.backup_work_dir / f"snap-{snap_id}"
            work.mkdir(parents=True, mode=0o700)
            try:
                print_ = fingerprint(layout.root, layout.log_file.name)
                archive = work / "archive.tar.gz"
                size, sha256 = build_archive(
                    layout.root,
                    engine.databases(layout),
                    layout.log_file,
                    work,
                    archive,
                    manifest,
                    uid,
                )
                self.store.upload(row.key, archive, sha256, on_started=started)
                return size, sha256, print_
            finally:
                shutil.rmtree(work, ignore_errors=True)

        try:
            size, sha256, print_ = await asyncio.to_thread(build_and_upload)
        except Exception as err:  # recorded whatever it was; never left "running"
            reason = str(err) or type(err).__name__
            await self._update(snap_id, status="failed", reason=reason[:2000], finished_at=utcnow())
            log.warning("snapshot %s of %s failed: %s", snap_id, instance.id, reason)
            if isinstance(err, FolderRefused):
                raise SnapshotRefused(f"the snapshot was refused: {reason}") from err
            raise BackupFailed(f"the snapshot failed: {reason}") from err
        note = ""
        if manifest.skipped:
            left_out = safe_fs.Skipped(dict(manifest.skipped)).summary()
            note = f"left out (not the instance's own regular files): {left_out}"
        await self._update(
            snap_id, status="good", size=size, sha256=sha256, fingerprint=print_,
            upload_id=None, finished_at=utcnow(), reason=note[:2000],
        )  # fmt: skip
        await self._checked(instance.id, print_)
        await self.abort_leftovers(instance.id)
        await self.prune(instance.id)
        self.kick_replication(instance)
        async with self.db() as session:
            done = await session.get(BackupSnapshot, snap_id)
        assert done is not None
        return done

    async def prune(self, instance_id: str) -> list[str]:
        """Apply retention to the instance's snapshots; return the ids deleted."""
        rows = await self.snapshots(instance_id)
        good = [r for r in rows if r.status == "good"]
        keep = to_keep([Candidate(r.id, r.created_at) for r in good], self.policy)
        doomed = [r for r in good if r.id not in keep]
        failed = [r for r in rows if r.status == "failed" and r.upload_id is None]
        doomed += failed[FAILED_ROWS_KEPT:]
        deleted: list[str] = []
        for row in doomed:
            try:
                if row.status == "good":
                    await asyncio.to_thread(self.store.delete, row.key)
            except StoreError as err:
                log.warning("pruning %s failed: %s", row.id, err)
                continue
            async with self.db() as session:
                gone = await session.get(BackupSnapshot, row.id)
                if gone is not None:
                    await session.delete(gone)
                    await session.commit()
            deleted.append(row.id)
        return deleted

    async def delete(self, account: Account, name: str, snapshot_id: str, *, force: bool) -> None:
        """Delete a snapshot. Refused while it runs, and for the newest good one unless
        `force` (it is what a restore would use)."""
        instance, row = await self.owned_snapshot(account, name, snapshot_id)
        if row.status == "running":
            raise Conflict("this snapshot is still being taken")
        if row.status == "good" and not force:
            newest = next(
                (r for r in await self.snapshots(instance.id) if r.status == "good"), None
            )
            if newest is not None and newest.id == row.id:
                raise Conflict(
                    "this is the newest good snapshot of the instance; pass force=true to "
                    "delete it anyway"
                )
        if row.status == "good":
            try:
                await asyncio.to_thread(self.store.delete, row.key)
            except StoreError as err:
                raise BackupFailed(f"the backup store failed: {err}") from err
        if row.upload_id:
            with contextlib.suppress(StoreError):
                await asyncio.to_thread(self.store.abort, row.key, row.upload_id)
        async with self.db() as session:
            gone = await session.get(BackupSnapshot, row.id)
            if gone is not None:
                await session.delete(gone)
                await session.commit()

    async def download(
        self, account: Account, name: str, snapshot_id: str
    ) -> tuple[str, int, Iterator[bytes]]:
        """(file name, size, content) of a good snapshot (409 for another status)."""
        _, row = await self.owned_snapshot(account, name, snapshot_id)
        if row.status != "good" or row.size is None:
            raise Conflict(
                f"backup {snapshot_id} is {row.status}; only good ones can be downloaded"
            )
        stamp = row.created_at.strftime(STAMP)
        return f"{name}-{stamp}-{row.id}.tar.gz", row.size, self.store.iter_bytes(row.key)

    # ----- recovery and cleanup

    async def _fail_interrupted_snapshots(self) -> None:
        async with self.db() as session:
            rows = (
                await session.exec(select(BackupSnapshot).where(BackupSnapshot.status == "running"))
            ).all()
            for row in rows:
                row.status = "failed"
                row.reason = "interrupted: the control plane stopped during the snapshot"
                row.finished_at = utcnow()
                session.add(row)
            await session.commit()
        work = self.settings.backup_work_dir
        if work.is_dir():
            for entry in work.glob("snap-*"):
                shutil.rmtree(entry, ignore_errors=True)

    async def _cleanup(self, rows: Sequence[Instance]) -> None:
        """Abort multipart uploads of failed snapshots; delete replica generations that left
        the point-in-time window; forget Litestream state of instances that are gone."""
        await self.abort_leftovers(None)
        live = {row.id for row in rows}
        states = await self.states()
        await self.replicas.prune({i: s for i, s in states.items() if i in live})
        meta = self.replication.meta_dir
        if meta.is_dir():
            for entry in meta.iterdir():
                if entry.name not in live:
                    self.replication.forget(entry.name)

    async def abort_leftovers(self, instance_id: str | None) -> None:
        """Abort the multipart uploads that failed snapshots left (of one instance, or all)."""
        query = select(BackupSnapshot).where(
            BackupSnapshot.status == "failed", col(BackupSnapshot.upload_id).is_not(None)
        )
        if instance_id is not None:
            query = query.where(BackupSnapshot.instance_id == instance_id)
        async with self.db() as session:
            leftovers = (await session.exec(query)).all()
        for row in leftovers:
            assert row.upload_id is not None
            try:
                await asyncio.to_thread(self.store.abort, row.key, row.upload_id)
            except StoreError as err:
                log.info("abort of %s still failing: %s", row.id, err)
                continue
            await self._update(row.id, upload_id=None)

    # ----- the operators' view

    async def fleet(self) -> list[FleetBackupPublic]:
        """Per live instance: last good snapshot, replication lag, overdue or not."""
        from control_plane.backups.overview import fleet_overview

        return await fleet_overview(self)
