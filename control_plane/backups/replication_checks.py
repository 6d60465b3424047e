"""The checks that keep a tenant's links out of replication (see `replication`'s docstring):
what an instance folder holds where its databases are (`replication_refusal`) and what
Litestream holds open below it (`held_files`, `held_refusal`), and the record of which
instances are refused (`FolderChecks`).

Cost: `FolderChecks.admitted` looks, per pass, at the files each Litestream holds open once
(grouped by instance folder: an instance of which Litestream holds nothing costs nothing
there), and `lstat`s the databases of every candidate but those whose databases Litestream
does not open now (paused while their instance sleeps: no tenant code runs to change their
folder; they are checked again right before a Litestream that would open them starts).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

from control_plane import safe_fs
from control_plane.backups.db_copy import SIDE_FILES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReplicatedDb:
    """One database to replicate: `path` inside instance `instance_id`, named `name`, into
    the replica generation `generation`."""

    instance_id: str
    path: Path
    name: str
    generation: int = 0


Candidate = tuple[Path, list[ReplicatedDb], int]  # instance folder, its databases, its uid


def replication_refusal(root: Path, databases: list[str], owner: int) -> str | None:
    """Why the databases `databases` (relative paths) of the instance folder `root` must not
    be replicated now (None: they may): a folder on their way, a database or one of its side
    files that is a link, a FIFO, someone else's file or a file with several links. Missing
    files are fine (Litestream waits for them). Blocking."""
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return None
    try:
        for rel in databases:
            for suffix in ("", *SIDE_FILES):
                info = safe_fs.lstat_at(root_fd, rel + suffix)
                problem = None if info is None else safe_fs.not_own_file(info, owner)
                if problem is not None:
                    return f"{rel}{suffix} is {problem}"
    except safe_fs.Refused as err:
        return str(err)
    finally:
        os.close(root_fd)
    return None


@dataclass(frozen=True)
class HeldFile:
    """A file a process holds open: the path it opened it by, and its inode's `stat` now."""

    path: str
    info: os.stat_result


def held_files(pid: int) -> list[HeldFile]:
    """The files process `pid` holds open, by path (none when it is gone). Blocking."""
    fds = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return []
    found: list[HeldFile] = []
    for name in names:
        try:
            where = os.readlink(f"{fds}/{name}")
            info = os.stat(f"{fds}/{name}")
        except OSError:  # closed meanwhile
            continue
        if where.startswith("/"):  # not a socket, a pipe, an anonymous inode
            found.append(HeldFile(where.removesuffix(" (deleted)"), info))
    return found


def held_by_folder(held: Sequence[HeldFile], parents: Collection[str]) -> dict[str, list[HeldFile]]:
    """`held` grouped by the folder just below one of `parents` (a folder holding instance
    folders) they are in; files elsewhere are left out."""
    found: dict[str, list[HeldFile]] = {}
    for item in held:
        for parent in parents:
            prefix = f"{parent}/"
            if item.path.startswith(prefix):
                name = item.path[len(prefix) :].split("/", 1)[0]
                found.setdefault(prefix + name, []).append(item)
                break
    return found


def held_refusal(
    held: Sequence[HeldFile], root: Path, databases: list[str], owner: int
) -> str | None:
    """Why the instance folder `root` (resolved) must be left out of replication now because
    Litestream holds open, below it, a file that is not `owner`'s (`held`, see `held_files`):
    one it opened while a hard link to another's file was in its place. The `-wal`/`-shm`/
    `-journal` of the databases `databases` (relative paths) that SQLite gave to another uid
    (`replication`'s docstring) are given back to `owner` first, and refuse nothing then
    (`safe_fs.reclaim`: only the very inode Litestream holds, still in place, with one link).
    None: all it holds there is `owner`'s. Blocking."""
    prefix = f"{root}/"
    foreign = {
        (item.path.removeprefix(prefix), item.info.st_dev, item.info.st_ino): item.info.st_uid
        for item in held
        if item.path.startswith(prefix) and item.info.st_uid != owner
    }
    if not foreign:
        return None
    side = {rel + suffix for rel in databases for suffix in SIDE_FILES}
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return None
    refusal = None
    try:
        for (rel, dev, ino), uid in sorted(foreign.items()):
            if rel in side and _reclaimed(root_fd, rel, owner, (dev, ino)):
                log.warning(
                    "%s of %s was given to uid %d by litestream's SQLite; given back to uid %d",
                    rel, root.name, uid, owner,
                )  # fmt: skip
            elif refusal is None:
                refusal = (
                    f"litestream opened {rel} while it was a file of uid {uid}, not {owner} "
                    "(a hard link in its place)"
                )
    finally:
        os.close(root_fd)
    return refusal


def _reclaimed(root_fd: int, rel: str, owner: int, inode: tuple[int, int]) -> bool:
    try:
        return safe_fs.reclaim(root_fd, rel, owner, inode)
    except OSError:  # a link on the way, or no permission (not root)
        return False


def _rels(root: Path, dbs: Sequence[ReplicatedDb]) -> list[str]:
    return [db.path.relative_to(root).as_posix() for db in dbs]


class FolderChecks:
    """Which instances may be replicated now, and why the others are refused."""

    def __init__(self) -> None:
        self.refused: dict[str, str] = {}  # instance id -> why its databases are left out
        self._folders: dict[str, tuple[Path, int]] = {}  # instance id -> its folder, its uid

    async def admitted(
        self,
        candidates: Sequence[Candidate],
        held: Callable[[], list[HeldFile]],
        unopened: Collection[str] = frozenset(),
    ) -> list[ReplicatedDb]:
        """The databases of `candidates` that may be replicated now: neither `held_refusal`
        (on what Litestream holds open now, `held()`) nor `replication_refusal` refuses their
        folder; an instance refused has none replicated (logged when a refusal starts and
        when it ends). The folders of instances in `unopened` (whose databases Litestream
        does not hold open now) keep the verdict they had, unless they had none. One
        thread for all."""
        known = {key for key in unopened if key in self._folders and key not in self.refused}

        def check() -> list[str | None]:
            parents = {str(root.parent) for root, dbs, _ in candidates if dbs}
            by_folder = held_by_folder(held(), parents) if parents else {}
            reasons: list[str | None] = []
            for root, dbs, uid in candidates:
                if not dbs or dbs[0].instance_id in known:
                    reasons.append(None)
                    continue
                rels = _rels(root, dbs)
                mine = by_folder.get(str(root))
                reason = held_refusal(mine, root, rels, uid) if mine else None
                reasons.append(reason or replication_refusal(root, rels, uid))
            return reasons

        reasons = await asyncio.to_thread(check)
        admitted: list[ReplicatedDb] = []
        self._folders = {}
        for (root, dbs, uid), reason in zip(candidates, reasons, strict=True):
            if not dbs:
                continue
            self._folders[dbs[0].instance_id] = (root, uid)
            if self._note(dbs[0].instance_id, reason):
                admitted.extend(dbs)
        self.refused = {key: why for key, why in self.refused.items() if key in self._folders}
        return admitted

    def _note(self, instance_id: str, reason: str | None) -> bool:
        """Record why the instance is refused (None: it is not); whether it is admitted."""
        before = self.refused.get(instance_id)
        if reason is None:
            if before is not None:
                log.info("replication of %s resumes", instance_id)
                del self.refused[instance_id]
            return True
        if before != reason:
            log.warning("replication of %s refused: %s", instance_id, reason)
        self.refused[instance_id] = reason
        return False

    async def still_admitted(self, dbs: Sequence[ReplicatedDb]) -> tuple[ReplicatedDb, ...]:
        """`dbs` (from `admitted`) without the instances `replication_refusal` refuses now, nor
        those `admitted` did not see: checked again right before a Litestream starts."""
        groups: dict[str, list[ReplicatedDb]] = {}
        for db in dbs:
            groups.setdefault(db.instance_id, []).append(db)
        folders = {key: self._folders.get(key) for key in groups}

        def check() -> dict[str, str | None]:
            reasons: dict[str, str | None] = {}
            for key, group in groups.items():
                folder = folders[key]
                if folder is None:
                    reasons[key] = "its folder was not checked"
                    continue
                root, uid = folder
                reasons[key] = replication_refusal(root, _rels(root, group), uid)
            return reasons

        reasons = await asyncio.to_thread(check)
        return tuple(db for db in dbs if self._note(db.instance_id, reasons[db.instance_id]))
