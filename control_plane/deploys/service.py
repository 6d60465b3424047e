"""Deploys of an instance's code folders for its owner (or an operator): `DeployService`.

A deploy takes one checked tar.gz (`control_plane.deploys.archive`) and makes the instance's
`pb_hooks/`, `pb_migrations/` and `pb_public/` what it holds (`keep`: files it lacks stay, and
a folder it lacks is left alone). An archive with a manifest (`control_plane.deploys.manifest`,
after a `plan`) holds only the contents that changed and names the rest. In order:

1. the archive is unpacked into the deploy's private work folder (within `PF_FILES_*` limits
   and the disk quota left, counting what the live folders hold as freed), the files its
   manifest names but does not carry are copied from the live folders (409 `stale_plan` when
   they changed since the plan), with `keep` the
   live files it lacks are copied beside; the result is packed as the deploy's kept content
   (`PF_DATA_DIR/deploys/INSTANCE_ID/DEPLOY_ID.tar.gz`, 0600) and given to the instance's uid;
2. the instance is held (`Instance.hold = "deploy:ID"`, as a restore does: the reconciler stops
   it and keeps it stopped), the folders are exchanged (`control_plane.deploys.switch`), the
   hold is released and a running instance is started again and awaited;
3. if the engine does not come up (a hook that does not compile, a migration that fails), the
   previous folders are swapped back and the instance started again: the deploy is `failed`
   with the engine's own lines from its log, and `DeployFailed` (422) says so. A hibernated
   instance is woken for the check the same way and put back to sleep after it; a stopped
   one is switched without starting (`started` False): `done`.

Rollback deploys a kept archive again (as a new deploy, `rollback_of` set). The newest
`PF_DEPLOYS_KEEP` archives of an instance are kept; older ones are removed (their rows stay).
One deploy of an instance at a time (409 otherwise, and while another operation holds it).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import tempfile
from collections.abc import AsyncIterable, Sequence
from pathlib import Path

from sqlmodel import col, select

from control_plane import safe_fs
from control_plane.db.models import Account, Instance, utcnow
from control_plane.deploys import journal, manifest, switch
from control_plane.deploys.archive import ArchiveLimits, ArchiveRefused, pack, unpack
from control_plane.deploys.manifest import DeployManifest, Plan
from control_plane.deploys.models import Deploy
from control_plane.files.rules import CODE_FOLDERS
from control_plane.files.service import FileService
from control_plane.lifecycle import InstanceState, transition
from control_plane.limits import MB
from control_plane.services.errors import (
    BadRequest,
    Conflict,
    Invalid,
    NotFound,
    ServiceError,
)
from control_plane.services.instances import actor_of
from control_plane.settings import Settings
from control_plane.specs import instance_layout

log = logging.getLogger(__name__)
LOG_KEPT = 8000  # characters of the instance's log kept with a deploy
WRITE_CHUNK = 1 << 20


class DeployFailed(ServiceError):
    """422: the engine refused the deploy at start; the previous deploy serves again."""

    status = 422
    code = "deploy_failed"


class ArchiveTooLarge(ServiceError):
    status = 413
    code = "too_large"


class OverQuota(ServiceError):
    status = 507
    code = "over_quota"


class StalePlan(ServiceError):
    """409: contents the manifest names are neither sent nor live (changed since the plan)."""

    status = 409
    code = "stale_plan"


def _refusal(refused: ArchiveRefused) -> ServiceError:
    kind: type[ServiceError] = {413: ArchiveTooLarge, 507: OverQuota}.get(refused.status, Invalid)
    return kind(refused.message, field="archive" if kind is Invalid else None)


def _manifest(staged: Path) -> tuple[dict[str, str], int, int]:
    """sha256 of each file of the staged folders, their count and bytes."""
    manifest: dict[str, str] = {}
    total = 0
    for folder in CODE_FOLDERS:
        for dirpath, _dirs, files in os.walk(staged / folder):
            for name in files:
                path = Path(dirpath) / name
                digest = hashlib.sha256()
                with open(path, "rb") as handle:
                    while piece := handle.read(WRITE_CHUNK):
                        digest.update(piece)
                manifest[path.relative_to(staged).as_posix()] = digest.hexdigest()
                total += path.stat().st_size
    return dict(sorted(manifest.items())), len(manifest), total


def _read_log_from(root: Path, offset: int) -> str:
    """The instance's log (`output.log`) from `offset` on (from its start when it was cut
    since), at most `LOG_KEPT` characters of its end; never following a link."""
    try:
        root_fd = safe_fs.open_anchor(root)
    except OSError:
        return ""
    try:
        fd = os.open("output.log", os.O_RDONLY | os.O_NOFOLLOW, dir_fd=root_fd)
    except OSError:
        return ""
    finally:
        os.close(root_fd)
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        start = offset if offset <= size else 0
        start = max(start, size - 4 * LOG_KEPT)
        handle.seek(start)
        return handle.read().decode("utf-8", "replace")[-LOG_KEPT:]


def _log_size(root: Path) -> int:
    try:
        return os.stat(root / "output.log", follow_symlinks=False).st_size
    except OSError:
        return 0


def hook_failures(log_text: str) -> str | None:
    """PocketBase's own report of hooks it could not run (it keeps serving without them):
    `failed to execute NAME.pb.js:` and the ` - ...` lines after it; None when there is none."""
    found: list[str] = []
    lines = log_text.splitlines()
    for n, line in enumerate(lines):
        if line.startswith("failed to execute ") and ".pb.js" in line:
            found.append(line.strip())
            found.extend(s.strip() for s in itertools.takewhile(_detail, lines[n + 1 : n + 6]))
    return " ".join(found)[:1500] if found else None


def _detail(line: str) -> bool:
    return line.startswith((" - ", "  "))


def engine_message(log_text: str) -> str:
    """The engine's own words about why it stopped: its error lines (PocketBase prints
    `Error: ...`), else the last lines of the log."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "exception" in line.lower()]
    chosen = errors[-5:] if errors else lines[-5:]
    return " | ".join(chosen)[:1500] or "the instance did not start (its log is empty)"


class DeployService:
    def __init__(self, settings: Settings, files: FileService) -> None:
        self.settings = settings
        self.files = files
        self.instances = files.instances
        self.busy: set[str] = set()

    # ----- reading

    async def history(self, account: Account, name: str) -> Sequence[Deploy]:
        instance = await self.instances.get(account, name)
        async with self.instances.db() as session:
            rows = await session.exec(
                select(Deploy)
                .where(col(Deploy.instance_id) == instance.id)
                .order_by(col(Deploy.created_at).desc(), col(Deploy.id).desc())
            )
            return rows.all()

    async def get(self, account: Account, name: str, deploy_id: str) -> Deploy:
        instance = await self.instances.get(account, name)
        async with self.instances.db() as session:
            row = await session.get(Deploy, deploy_id)
        if row is None or row.instance_id != instance.id:
            raise NotFound("no such deploy")
        return row

    # ----- deploying

    async def plan(
        self, account: Account, name: str, wanted: DeployManifest, *, keep: bool = False
    ) -> Plan:
        """Which contents of `wanted` the instance lacks (to be sent), and what a deploy of
        it would add, change and remove."""
        instance, _files = await self.files.open(account, name)
        root = instance_layout(self.settings, instance.id).root
        uid = self.files.uid_of(instance)
        engine = self.instances.engines.get(instance.engine)
        return await asyncio.to_thread(
            manifest.plan, root, uid, wanted, keep=keep, platform_file=engine.writes_itself
        )

    async def receive(self, body: AsyncIterable[bytes]) -> Path:
        """The request body in a private temporary file (written off the loop)."""
        work = self.settings.deploys_dir / "incoming"
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True, mode=0o700)
        fd, raw = await asyncio.to_thread(tempfile.mkstemp, ".tar.gz", "upload-", str(work))
        path = Path(raw)
        limit = self.settings.deploy_max_mb * MB
        size = 0
        try:
            with os.fdopen(fd, "wb") as handle:
                pending = bytearray()
                async for piece in body:
                    size += len(piece)
                    if size > limit:
                        raise ArchiveTooLarge(f"the archive is larger than {limit} bytes")
                    pending += piece
                    if len(pending) >= WRITE_CHUNK:
                        await asyncio.to_thread(handle.write, bytes(pending))
                        pending.clear()
                if pending:
                    await asyncio.to_thread(handle.write, bytes(pending))
        except BaseException:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise
        if size == 0:
            await asyncio.to_thread(path.unlink, missing_ok=True)
            raise BadRequest("send the tar.gz archive as the body")
        return path

    async def deploy(
        self, account: Account, name: str, archive: Path, *, keep: bool = False
    ) -> Deploy:
        """Apply `archive` (removed afterwards) to the instance `name` (see the module)."""
        try:
            instance, _files = await self.files.open(account, name, writing=True)
            return await self._run(instance, actor_of(account), archive, keep, None)
        finally:
            await asyncio.to_thread(archive.unlink, missing_ok=True)

    async def rollback(self, account: Account, name: str, deploy_id: str | None) -> Deploy:
        """Deploy again the content of `deploy_id` (None: the newest good deploy before the
        newest good one)."""
        instance, _files = await self.files.open(account, name, writing=True)
        if deploy_id is None:
            good = [
                d for d in await self.history(account, name) if d.status == "done" and d.archived
            ]
            if len(good) < 2:
                raise Conflict("there is no earlier good deploy to roll back to")
            target = good[1]
        else:
            target = await self.get(account, name, deploy_id)
            if target.status != "done" or not target.archived:
                raise Conflict("that deploy's content is not kept (failed, or too old)")
        kept = self._kept_path(instance.id, target.id)
        copy = self.settings.deploys_dir / "incoming" / f"rollback-{target.id}-{os.getpid()}"
        await asyncio.to_thread(copy.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
        await asyncio.to_thread(_copy, kept, copy)
        try:
            return await self._run(instance, actor_of(account), copy, False, target.id)
        finally:
            await asyncio.to_thread(copy.unlink, missing_ok=True)

    def _kept_path(self, instance_id: str, deploy_id: str) -> Path:
        return self.settings.deploys_dir / instance_id / f"{deploy_id}.tar.gz"

    async def _run(
        self, instance: Instance, actor: str, archive: Path, keep: bool, rollback_of: str | None
    ) -> Deploy:
        if instance.id in self.busy:
            raise Conflict("a deploy of this instance is running; try again when it is done")
        self.busy.add(instance.id)
        try:
            task = asyncio.create_task(self._carry_out(instance, actor, archive, keep, rollback_of))
            return await asyncio.shield(task)  # a client going away does not stop it
        finally:
            self.busy.discard(instance.id)

    async def _carry_out(
        self, instance: Instance, actor: str, archive: Path, keep: bool, rollback_of: str | None
    ) -> Deploy:
        row = Deploy(instance_id=instance.id, actor=actor, keep=keep, rollback_of=rollback_of)
        work = self.settings.deploys_dir / "work" / row.id
        staged, aside = work / "new", work / "old"
        root = instance_layout(self.settings, instance.id).root
        uid = self.files.uid_of(instance)
        try:
            folders = await self._stage(instance, archive, work, staged, keep, root, uid, row)
        except BaseException:
            await asyncio.to_thread(switch.discard, work)
            raise
        async with self.instances.db() as session:
            session.add(row)
            await session.commit()
        try:
            return await self._switch(instance, row, staged, aside, work, root, folders, uid)
        finally:
            await asyncio.to_thread(switch.discard, work)
            await self._prune(instance.id)

    async def _stage(
        self,
        instance: Instance,
        archive: Path,
        work: Path,
        staged: Path,
        keep: bool,
        root: Path,
        uid: int,
        row: Deploy,
    ) -> list[str]:
        limits = self.files.limits_of(instance)
        quota = limits.quota_bytes
        if quota is not None:
            quota += await asyncio.to_thread(switch.code_bytes, root)
        await asyncio.to_thread(work.mkdir, parents=True, mode=0o700)
        await asyncio.to_thread(staged.mkdir, mode=0o700)
        try:
            contents = await asyncio.to_thread(
                unpack,
                archive,
                staged,
                ArchiveLimits(limits.max_file_bytes, limits.max_files, quota),
            )
        except ArchiveRefused as refused:
            raise _refusal(refused) from None
        if contents.declared is not None:
            await self._complete(contents.declared, contents.manifest, staged, root, uid)
        folders = list(CODE_FOLDERS)
        if keep:  # the live files the archive lacks are staged too
            for folder in folders:
                await asyncio.to_thread(switch.carry_over, root, staged, folder, uid)
        manifest, count, total = await asyncio.to_thread(_manifest, staged)
        if count > limits.max_files or (quota is not None and total > quota):
            raise OverQuota("with the files kept, the deploy exceeds the instance's limits")
        kept = self._kept_path(instance.id, row.id)
        await asyncio.to_thread(kept.parent.mkdir, parents=True, exist_ok=True, mode=0o700)
        _size, digest = await asyncio.to_thread(pack, staged, folders, kept)
        row.manifest, row.file_count, row.total_bytes = manifest, count, total
        row.sha256, row.archived = digest, True
        await asyncio.to_thread(switch.hand_over, staged, uid)
        return folders

    async def _complete(
        self, declared: bytes, sent: dict[str, str], staged: Path, root: Path, uid: int
    ) -> None:
        """Fill the staged folders with what the archive's manifest names but does not carry."""
        try:
            wanted = manifest.parse(declared)
            await asyncio.to_thread(manifest.fill, staged, sent, wanted, root, uid)
        except manifest.ManifestRefused as refused:
            raise Invalid(refused.message, field="archive") from None
        except manifest.Stale as stale:
            first = ", ".join(stale.paths[:3])
            raise StalePlan(
                f"{len(stale.paths)} files the manifest names were neither sent nor found live "
                f"(the instance's files changed since the plan: {first}); deploy again"
            ) from None

    async def _hold(self, instance_id: str, deploy_id: str, *, wait_stopped: bool) -> Instance:
        async with self.instances.db() as session:
            live = await session.get(Instance, instance_id)
            if live is None or live.hold or live.status == InstanceState.DELETING:
                raise Conflict("another operation holds this instance; try again when done")
            live.hold = f"deploy:{deploy_id}"
            session.add(live)
            await session.commit()
            await session.refresh(live)
        if wait_stopped:
            reconciler = self.instances.reconciler
            reconciler.nudge()
            await reconciler.wait_settled(instance_id, self.settings.stop_timeout_s + 15)
            async with self.instances.db() as session:
                now = await session.get(Instance, instance_id)
            if now is None or now.pid is not None or now.status not in ("stopped", "failed"):
                await self._release(instance_id, deploy_id, start=False)
                raise Conflict(f"the instance did not stop (it is {now.status if now else 'gone'})")
        return live

    async def _release(
        self, instance_id: str, deploy_id: str, *, start: bool, wake: bool = False
    ) -> Instance | None:
        """Release the hold; with `start`, forgive the crashes of the failed deploy and wait
        until the instance settles (`wake`: a hibernated instance is wanted running first)."""
        async with self.instances.db() as session:
            live = await session.get(Instance, instance_id)
            if live is None:
                return None
            if live.hold == f"deploy:{deploy_id}":
                live.hold = None
            if wake and live.desired == "hibernated":
                live.desired = "running"
            if start:
                live.crash_count = 0
                live.next_start_at = None
                if live.status == InstanceState.FAILED and live.desired == "running":
                    transition(
                        session, live, InstanceState.PROVISIONING, actor="deploy", reason="deploy"
                    )
            session.add(live)
            await session.commit()
        self.instances.reconciler.nudge()
        if start:
            return await self._started_or_crashed(instance_id)
        async with self.instances.db() as session:
            return await session.get(Instance, instance_id)

    async def _started_or_crashed(self, instance_id: str) -> Instance | None:
        """The instance once it runs its current configuration, or once its first start
        failed (a crash recorded, or `failed`), or when `PF_START_TIMEOUT_S` passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.start_timeout_s + 5
        while True:
            async with self.instances.db() as session:
                live = await session.get(Instance, instance_id)
            if live is None or live.crash_count > 0 or live.status == InstanceState.FAILED:
                return live
            if (
                live.status == InstanceState.RUNNING
                and live.pid is not None
                and live.running_generation in (None, live.generation)
            ):
                return live
            if loop.time() > deadline:
                return live
            await asyncio.sleep(0.2)

    async def _switch(
        self,
        instance: Instance,
        row: Deploy,
        staged: Path,
        aside: Path,
        work: Path,
        root: Path,
        folders: list[str],
        uid: int,
    ) -> Deploy:
        async with self.instances.db() as session:
            current = await session.get(Instance, instance.id)
        assert current is not None
        running = current.desired == "running" and current.status in (
            InstanceState.RUNNING,
            InstanceState.PROVISIONING,
        )
        asleep = current.desired == "hibernated"  # (or on its way to sleep)
        try:
            await self._hold(instance.id, row.id, wait_stopped=running or asleep)
        except ServiceError as err:
            await self._finish(row, "failed", err.message, "")
            raise
        offset = await asyncio.to_thread(_log_size, root)
        try:
            await asyncio.to_thread(journal.write, work, staged, root, folders)
            await asyncio.to_thread(switch.switch, staged, aside, root, folders, uid)
        except OSError as err:
            await self._release(instance.id, row.id, start=running)
            await self._finish(row, "failed", f"the switch failed: {err}", "")
            raise ServiceError(f"the switch failed, instance left as it was: {err}") from err
        try:
            return await self._check(
                instance, row, work, aside, root, folders, uid, offset, running, asleep
            )
        finally:
            if asleep:
                await self._sleep_again(instance.id)

    async def _check(
        self,
        instance: Instance,
        row: Deploy,
        work: Path,
        aside: Path,
        root: Path,
        folders: list[str],
        uid: int,
        offset: int,
        running: bool,
        asleep: bool,
    ) -> Deploy:
        """Start the instance on the switched folders and see it answer, or put the previous
        folders back (see the module)."""
        after = await self._release(instance.id, row.id, start=running or asleep, wake=asleep)
        if not (running or asleep):
            await self._finish(
                row,
                "done",
                "switched; the instance is not running: it serves this deploy when it starts",
                "",
                started=False,
            )
            return row
        text = await asyncio.to_thread(_read_log_from, root, offset)
        if after is not None and after.status == InstanceState.RUNNING and after.pid:
            refused_hooks = hook_failures(text)
            if refused_hooks is None:
                done = "deployed; the instance answers"
                if asleep:
                    done = "deployed; the instance answered on it and sleeps again"
                await self._finish(row, "done", done, text, True)
                return row
            message = refused_hooks
        else:
            message = engine_message(text)
        message = message.replace(f"{root}/", "")
        log.warning("deploy %s of %s failed: %s", row.id, instance.id, message)
        await self._hold(instance.id, row.id, wait_stopped=True)
        undo = work / "undo"
        await asyncio.to_thread(switch.switch, aside, undo, root, folders, uid)
        back = await self._release(instance.id, row.id, start=True)
        state = back.status if back is not None else "gone"
        where = (
            "the instance went back to the last good deploy"
            if state == InstanceState.RUNNING
            else f"the previous folders were put back (the instance is {state})"
        )
        full = f"the engine did not start with this deploy: {message}; {where}"
        await self._finish(row, "failed", full, text, True)
        row.archived = False
        raise DeployFailed(full)

    async def _sleep_again(self, instance_id: str) -> None:
        """Want the instance woken for a deploy's check hibernated again."""
        async with self.instances.db() as session:
            live = await session.get(Instance, instance_id)
            if live is None or live.desired != "running":
                return
            live.desired = "hibernated"
            session.add(live)
            await session.commit()
        self.instances.reconciler.nudge()

    # ----- after a crash

    async def recover(self) -> None:
        """Settle the deploys a stopped control plane left `running` (call before the
        reconciler starts). A deploy whose instance is still held (stopped) by it is undone:
        its journal (`control_plane.deploys.journal`) leads the previous folders back, the
        deploy is `failed` and the hold released, so the instance starts on what it served
        before. One whose hold was released already had completed its switch and handed the
        instance back: it stays, `done`, unverified (`started` false). Work folders left
        behind are removed."""
        async with self.instances.db() as session:
            rows = (await session.exec(select(Deploy).where(Deploy.status == "running"))).all()
        for row in rows:
            await self._recover_one(row)
        work = self.settings.deploys_dir / "work"
        if await asyncio.to_thread(work.is_dir):
            for leftover in await asyncio.to_thread(lambda: list(work.iterdir())):
                await asyncio.to_thread(switch.discard, leftover)

    async def _recover_one(self, row: Deploy) -> None:
        work = self.settings.deploys_dir / "work" / row.id
        root = instance_layout(self.settings, row.instance_id).root
        async with self.instances.db() as session:
            instance = await session.get(Instance, row.instance_id)
        held = instance is not None and instance.hold == f"deploy:{row.id}"
        entries = await asyncio.to_thread(journal.read, work)
        stopped = "the control plane stopped during this deploy"
        if not held and entries and await asyncio.to_thread(journal.switched, root, entries):
            message = f"{stopped}, after its switch: the instance serves it (unverified)"
            await self._finish(row, "done", message, "", started=False)
            log.warning("deploy %s of %s: %s", row.id, row.instance_id, message)
            return
        if entries is None or not await asyncio.to_thread(root.is_dir):
            message = f"{stopped}, before its switch: the live folders were not changed"
        else:
            try:
                moved = await asyncio.to_thread(journal.put_back, work, root, entries)
            except OSError as err:
                message = f"{stopped}; its previous folders could not all be put back: {err}"
            else:
                message = (
                    f"{stopped}; the previous folders were put back ({', '.join(moved)})"
                    if moved
                    else f"{stopped}; the live folders were not changed"
                )
        log.warning("deploy %s of %s: %s", row.id, row.instance_id, message)
        await self._finish(row, "failed", message, "")
        if held:
            await self._release(row.instance_id, row.id, start=False)

    async def _finish(
        self, row: Deploy, status: str, message: str, text: str, started: bool = False
    ) -> None:
        row.status, row.message, row.log = status, message[:2000], text
        row.started, row.finished_at = started, utcnow()
        if status == "failed":
            row.archived = False
        async with self.instances.db() as session:
            stored = await session.get(Deploy, row.id)
            if stored is None:
                return
            for key in ("status", "message", "log", "started", "finished_at", "archived"):
                setattr(stored, key, getattr(row, key))
            session.add(stored)
            await session.commit()
        if status == "failed":
            await asyncio.to_thread(
                self._kept_path(row.instance_id, row.id).unlink, missing_ok=True
            )

    async def _prune(self, instance_id: str) -> None:
        """Keep the archives of the newest `PF_DEPLOYS_KEEP` good deploys."""
        async with self.instances.db() as session:
            rows = (
                await session.exec(
                    select(Deploy)
                    .where(col(Deploy.instance_id) == instance_id, col(Deploy.archived))
                    .order_by(col(Deploy.created_at).desc(), col(Deploy.id).desc())
                )
            ).all()
            for old in rows[self.settings.deploys_keep :]:
                old.archived = False
                session.add(old)
                await asyncio.to_thread(
                    self._kept_path(instance_id, old.id).unlink, missing_ok=True
                )
            await session.commit()


def _copy(source: Path, target: Path) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(source, "rb") as src, os.fdopen(fd, "wb") as out:
        while piece := src.read(WRITE_CHUNK):
            out.write(piece)
