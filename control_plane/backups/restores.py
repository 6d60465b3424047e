"""Restores: from a snapshot, or to a point in time; verified, atomic, crash-safe.

One restore, step by step (each step recorded as the restore's `phase`):
1. `stopping`: a `BackupRestore` row is written together with `Instance.hold =
   "restore:ID"`: from then on the reconciler keeps the instance stopped (whatever its desired
   state, and a wake-up too), and Litestream is restarted without its databases.
2. `fetching`: the new folder is staged in `PF_DATA_DIR/backup-work/restore-ID/new`: the
   archive is downloaded, its size and SHA-256 checked, extracted, every file checked against
   the manifest, every database with `PRAGMA integrity_check` (point in time: each database is
   rebuilt by `litestream restore -timestamp` from the replica generation that holds the
   moment, checked likewise, and the instance's other files are carried over as they are now;
   `restored_to` records when, at the latest, the state rebuilt was replicated: before `at`
   by however far replication lagged at that moment). Whatever is carried over from the live
   folder is read without following links, and only the instance's own regular files (the
   others are named in the restore's `reason`); the staged folder is then given to the
   instance's uid (`restore.hand_over`).
3. `swapping`: the staged folder and the live one are exchanged atomically; the old one goes
   to the trash as a safety copy (`STAMP-ID-NAME.before-restore`, swept after
   `PF_TRASH_RETENTION_DAYS`); the instance moves to a new replica generation, which Litestream
   starts with a full snapshot of the restored databases (the history before the restore stays
   in the previous generation, where a later point-in-time restore can still find it).
4. `done`: the hold is released and the instance starts as its desired state says.

A failure before the swap leaves the instance exactly as it was (it starts again), with the
reason recorded. After a crash or `kill -9` of the control plane, `recover()` (at start) looks
at the journal: a swap that happened is completed, anything else is undone; the hold is
released either way, so the instance runs again and can be restored again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlmodel import select

from control_plane.backups.archive import ArchiveError, extract_verified
from control_plane.backups.local_store import sha256_file
from control_plane.backups.models import BackupRestore, BackupSnapshot
from control_plane.backups.replication import ReplicationError
from control_plane.backups.restore import (
    Workspace,
    carry_over_files,
    carry_over_tree,
    check_databases,
    hand_over,
    recover,
    swap_in,
    to_trash,
)
from control_plane.db.engine import update_row
from control_plane.db.models import Account, Instance, utcnow
from control_plane.services.errors import Conflict, Invalid, ServiceError
from control_plane.specs import instance_layout

if TYPE_CHECKING:
    from control_plane.backups.service import BackupService

log = logging.getLogger(__name__)


class RestoreRefused(ServiceError):
    """The backup failed a check; the instance was left as it was."""

    status = 422
    code = "restore_refused"


class RestoreFailed(ServiceError):
    """Fetching what the restore needs failed; the instance was left as it was."""

    status = 502
    code = "restore_failed"


class Restorer:
    def __init__(self, service: BackupService) -> None:
        self.service = service
        self.settings = service.settings
        self.db = service.db

    # ----- entry points

    async def from_snapshot(self, account: Account, name: str, snapshot_id: str) -> BackupRestore:
        instance, snap = await self.service.owned_snapshot(account, name, snapshot_id)
        if snap.status != "good":
            raise Conflict(f"backup {snapshot_id} is {snap.status}; only good ones can be restored")
        return await self._run(instance, f"account:{account.id}", snap, None)

    async def to_point(self, account: Account, name: str, at: datetime) -> BackupRestore:
        instance = await self.service.instances.get(account, name)
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if not self.settings.replication:
            raise Conflict("continuous replication is off on this server (PF_REPLICATION)")
        start, end = await self.service.replicas.window(instance)
        if start is None or end is None:
            raise Conflict(f"{name} has no replica yet to restore from")
        if at > utcnow():
            raise Invalid("`at` is in the future", field="at")
        if not start <= at <= end:
            raise Invalid(
                f"`at` must be between {start.isoformat()} and {end.isoformat()} "
                "(the point-in-time window)",
                field="at",
            )
        return await self._run(instance, f"account:{account.id}", None, at)

    # ----- the procedure

    async def _run(
        self, instance: Instance, actor: str, snap: BackupSnapshot | None, at: datetime | None
    ) -> BackupRestore:
        service = self.service
        if instance.id in service.busy or instance.hold:
            what = service.busy.get(instance.id, "restore")
            raise Conflict(f"a {what} of this instance is running; try again when it is done")
        service.busy[instance.id] = "restore"
        try:
            op = await self._begin(instance, actor, snap, at)
            task = asyncio.create_task(self._carry_out(instance, op, snap, at))
            return await asyncio.shield(task)  # a client going away does not stop it
        finally:
            service.busy.pop(instance.id, None)

    async def _begin(
        self, instance: Instance, actor: str, snap: BackupSnapshot | None, at: datetime | None
    ) -> BackupRestore:
        op = BackupRestore(
            instance_id=instance.id,
            snapshot_id=snap.id if snap else None,
            point_in_time=at,
            actor=actor,
        )
        async with self.db() as session:
            row = await session.get(Instance, instance.id)
            if row is None or row.hold:
                raise Conflict("another operation holds this instance")
            row.hold = f"restore:{op.id}"
            session.add(row)
            session.add(op)
            await session.commit()
        return op

    async def _set(self, op_id: str, **fields: object) -> None:
        await update_row(self.db, BackupRestore, op_id, **fields)

    async def _carry_out(
        self,
        instance: Instance,
        op: BackupRestore,
        snap: BackupSnapshot | None,
        at: datetime | None,
    ) -> BackupRestore:
        service = self.service
        space = Workspace(self.settings.backup_work_dir, op.id)
        layout = instance_layout(self.settings, instance.id)
        uid = service.instance_uid(instance)
        owner = uid if uid is not None else os.geteuid()
        try:
            service.reconciler.nudge()
            await service.reconciler.wait_settled(instance.id, self.settings.stop_timeout_s + 15)
            await self._require_stopped(instance.id)
            await service.apply_replication()
            await self._set(op.id, phase="fetching")
            await asyncio.to_thread(space.create)
            if snap is not None:
                await asyncio.to_thread(self._stage_snapshot, snap, space)
            else:
                assert at is not None
                await self._stage_point(op.id, instance, at, space, layout.root, owner)
            log_name = layout.log_file.name
            await asyncio.to_thread(carry_over_files, layout.root, space.new, [log_name], owner)
            await asyncio.to_thread(hand_over, space.new, uid)
        except Exception as err:
            await self._fail(instance, op, space, err)
            if isinstance(err, ArchiveError):
                raise RestoreRefused(f"restore refused, instance left as it was: {err}") from err
            if isinstance(err, ServiceError):
                raise
            raise RestoreFailed(f"restore failed, instance left as it was: {err}") from err
        await self._set(op.id, phase="swapping")
        previous: Path | None
        try:
            previous = await asyncio.to_thread(swap_in, space, layout.root)
        except OSError as err:
            previous = await asyncio.to_thread(recover, space, layout.root)
            if previous is None:
                await self._fail(instance, op, space, err)
                raise RestoreFailed(f"restore failed, instance left as it was: {err}") from err
        await self._finish(instance, op, space, previous)
        await service.reconciler.wait_settled(instance.id, self.settings.start_timeout_s)
        async with self.db() as session:
            done = await session.get(BackupRestore, op.id)
        assert done is not None
        return done

    async def _require_stopped(self, instance_id: str) -> None:
        async with self.db() as session:
            row = await session.get(Instance, instance_id)
        if row is None or row.pid is not None or row.status not in ("stopped", "failed"):
            state = row.status if row else "gone"
            raise RestoreFailed(f"the instance did not stop (it is {state})")

    def _stage_snapshot(self, snap: BackupSnapshot, space: Workspace) -> None:
        archive = space.root / "archive.tar.gz"
        self.service.store.download(snap.key, archive)
        size, digest = sha256_file(archive)
        if size != snap.size or digest != snap.sha256:
            raise ArchiveError("the downloaded archive does not match its recorded checksum")
        extract_verified(archive, space.new)
        archive.unlink()

    async def _stage_point(
        self,
        op_id: str,
        instance: Instance,
        at: datetime,
        space: Workspace,
        live: Path,
        owner: int,
    ) -> None:
        dbs = await self.service.replicas.covering(instance, at)
        rels = [db.path.relative_to(live).as_posix() for db in dbs]
        space.new.mkdir(mode=0o700)
        for db, rel in zip(dbs, rels, strict=True):
            target = space.new / rel
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            txid = await self.service.replication.restore(db, target, at)
            if db is dbs[0] and txid is not None:  # the main database: what moment it is
                with contextlib.suppress(ReplicationError):
                    written = await self.service.replication.committed_at(db, txid)
                    # the store's time of the upload: the state is at most that recent
                    await self._set(op_id, restored_to=min(written, at) if written else None)
        layout = instance_layout(self.settings, instance.id)
        skipped = await asyncio.to_thread(
            carry_over_tree, live, space.new, rels, layout.log_file.name, owner
        )
        if skipped.entries:
            note = f"left out of the restored folder: {skipped.summary()}"
            await self._set(op_id, reason=note[:2000])
        await asyncio.to_thread(check_databases, space.new, rels)

    async def _fail(
        self, instance: Instance, op: BackupRestore, space: Workspace, err: BaseException
    ) -> None:
        reason = str(err) or type(err).__name__
        log.warning("restore %s of %s failed: %s", op.id, instance.id, reason)
        await asyncio.to_thread(space.discard)
        await self._set(op.id, status="failed", reason=reason[:2000], finished_at=utcnow())
        await self._release(instance.id)

    async def _finish(
        self, instance: Instance, op: BackupRestore, space: Workspace, previous: Path | None
    ) -> None:
        name = instance.name or instance.former_name
        safety = None
        if previous is not None:
            safety = await asyncio.to_thread(
                to_trash, previous, self.settings.trash_dir, instance.id, name
            )
        await asyncio.to_thread(space.discard)
        await self.service.replicas.advance(instance.id, f"restore {op.id}")
        await self._set(
            op.id,
            status="done",
            phase="done",
            safety_copy=str(safety) if safety else None,
            finished_at=utcnow(),
        )
        await self._release(instance.id)

    async def _release(self, instance_id: str) -> None:
        async with self.db() as session:
            row = await session.get(Instance, instance_id)
            if row is not None and row.hold and row.hold.startswith("restore:"):
                row.hold = None
                session.add(row)
                await session.commit()
        self.service.reconciler.nudge()
        await self.service.apply_replication()

    # ----- after a crash

    async def recover(self) -> None:
        """Finish or undo restores that a stopped control plane left running (see module)."""
        async with self.db() as session:
            ops = (
                await session.exec(select(BackupRestore).where(BackupRestore.status == "running"))
            ).all()
        for op in ops:
            async with self.db() as session:
                instance = await session.get(Instance, op.instance_id)
            if instance is None:
                continue
            space = Workspace(self.settings.backup_work_dir, op.id)
            live = instance_layout(self.settings, instance.id).root
            try:
                previous = await asyncio.to_thread(recover, space, live)
            except OSError as err:
                log.error("recovering restore %s: %s", op.id, err)
                previous = None
            if previous is not None:
                log.warning("restore %s was interrupted after its swap; completing it", op.id)
                await self._finish(instance, op, space, previous)
            else:
                log.warning("restore %s was interrupted before its swap; undoing it", op.id)
                await self._fail(
                    instance,
                    op,
                    space,
                    RuntimeError("interrupted: the control plane stopped during the restore"),
                )

    async def last(self, instance_id: str) -> BackupRestore | None:
        async with self.db() as session:
            rows = await session.exec(
                select(BackupRestore)
                .where(BackupRestore.instance_id == instance_id)
                .order_by(BackupRestore.created_at.desc())  # type: ignore[attr-defined]
                .limit(1)
            )
            return rows.first()
