"""Restores on disk: stage a verified folder, swap it in atomically, recover after a crash.

A restore works in `PF_DATA_DIR/backup-work/restore-OP/` (same filesystem as the instances):

    new/            the staged instance folder, built and checked before anything changes
    journal.json    written just before the swap: the inode of `new/`
    previous/       where the old folder lands if the atomic exchange is unavailable

The swap is one `renameat2(RENAME_EXCHANGE)` of `new/` and the live folder (Linux): at every
instant the live path holds either the old or the new folder, complete. Where the filesystem
cannot exchange, it is two renames, and `recover` finishes them from the journal. Afterwards the
old folder is moved to the trash (`PF_DATA_DIR/trash/STAMP-ID-NAME.before-restore`), where the
reconciler's trash sweep deletes it after `PF_TRASH_RETENTION_DAYS`.

The live folder is its tenant's, who may replace anything in it at any moment: what is carried
over from it (`carry_over_files`, `carry_over_tree`) is read through `control_plane.safe_fs`
(no link followed on any component, only the instance's own regular files with one link) and
written as new files below descriptors of the private staged folder. Before the swap,
`hand_over` gives the whole staged folder to the instance's uid (`fchown` on each descriptor;
folders 0700, files 0600). The renames themselves move entries of folders only root writes
(`PF_DATA_DIR/instances`, the workspace), never a path inside an instance folder.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from control_plane import safe_fs
from control_plane.backups.archive import ArchiveError, integrity_problem, not_archived

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
TRASH_STAMP = "%Y%m%dT%H%M%SZ"  # as the reconciler names trash entries

_libc: ctypes.CDLL | None = None


def _renameat2() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return getattr(_libc, "renameat2", None)


def exchange(a: Path, b: Path) -> None:
    """Atomically swap the paths `a` and `b` (both must exist). Raises OSError, with errno
    ENOSYS or EINVAL where the system or filesystem cannot."""
    func = _renameat2()
    if func is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    result = func(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(a))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Workspace:
    """The scratch folder of one restore."""

    def __init__(self, work_root: Path, op_id: str) -> None:
        self.root = work_root / f"restore-{op_id}"
        self.new = self.root / "new"
        self.journal = self.root / "journal.json"
        self.previous = self.root / "previous"

    def create(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.root.mkdir(parents=True, mode=0o700)

    def discard(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def carry_over_files(live: Path, staged: Path, names: list[str], owner: int) -> safe_fs.Skipped:
    """Copy the files `names` (relative paths) of the live folder into the staged one, each
    when it is a regular file of `owner` with one link (others are left out, and said)."""
    skipped = safe_fs.Skipped()
    live_fd = _open_live(live)
    if live_fd is None:
        return skipped
    try:
        staged_fd = safe_fs.open_anchor(staged)
        try:
            for rel in names:
                parts = safe_fs.components(rel)
                folder = "/".join(parts[:-1])
                try:
                    source = safe_fs.open_dir(live_fd, folder) if folder else os.dup(live_fd)
                except FileNotFoundError:
                    continue
                except safe_fs.Refused as err:
                    skipped.add(rel, err.reason)
                    continue
                try:
                    _carry_one(source, parts[-1], staged_fd, folder, rel, owner, skipped)
                finally:
                    os.close(source)
        finally:
            os.close(staged_fd)
    finally:
        os.close(live_fd)
    return skipped


def carry_over_tree(
    live: Path, staged: Path, databases: list[str], log_name: str, owner: int
) -> safe_fs.Skipped:
    """Copy every file of the live folder but its databases (and what archives leave out)
    into the staged one, each when it is a regular file of `owner` with one link: for a
    point-in-time restore, which restores the databases and keeps the files as they are now.
    Files the staged folder already holds are kept."""
    skipped = safe_fs.Skipped()
    live_fd = _open_live(live)
    if live_fd is None:
        return skipped
    try:
        staged_fd = safe_fs.open_anchor(staged)
        try:
            entries = safe_fs.walk(
                live_fd,
                prune=lambda rel: not_archived(rel, databases, log_name),
                skipped=skipped,
            )
            for entry in entries:
                if entry.is_dir or not_archived(entry.rel, databases, log_name):
                    continue
                folder = entry.rel.rpartition("/")[0]
                _carry_one(entry.dir_fd, entry.name, staged_fd, folder, entry.rel, owner, skipped)
        finally:
            os.close(staged_fd)
    finally:
        os.close(live_fd)
    return skipped


def _open_live(live: Path) -> int | None:
    try:
        return safe_fs.open_anchor(live)
    except FileNotFoundError:
        return None


def _carry_one(
    source_dir: int,
    name: str,
    staged_fd: int,
    folder: str,
    rel: str,
    owner: int,
    skipped: safe_fs.Skipped,
) -> None:
    try:
        target_dir = safe_fs.make_dirs(staged_fd, folder) if folder else os.dup(staged_fd)
    except safe_fs.Refused as err:  # the staged folder has a file where this needs a folder
        skipped.add(rel, err.reason)
        return
    try:
        safe_fs.copy_own_file(source_dir, name, target_dir, owner)
    except FileNotFoundError:
        pass  # deleted meanwhile
    except FileExistsError:
        pass  # the staged folder has its own (a restored database)
    except safe_fs.Refused as err:
        skipped.add(rel, err.reason)
    finally:
        os.close(target_dir)


def hand_over(staged: Path, uid: int | None) -> None:
    """Give the staged folder to the instance's `uid` (None: it runs as us; nothing to do)."""
    if uid is None:
        return
    staged_fd = safe_fs.open_anchor(staged)
    try:
        safe_fs.hand_over(staged_fd, uid)
    finally:
        os.close(staged_fd)


def check_databases(staged: Path, databases: list[str]) -> None:
    """`PRAGMA integrity_check` of each database present in the staged folder."""
    for rel in databases:
        path = staged / rel
        if path.exists():
            problem = integrity_problem(path)
            if problem is not None:
                raise ArchiveError(f"database {rel} fails its integrity check: {problem}")


def swap_in(space: Workspace, live: Path) -> Path:
    """Put the staged folder at `live`; return where the old folder is now."""
    space.journal.write_text(json.dumps({"staged_inode": space.new.stat().st_ino}))
    _fsync_dir(space.root)
    try:
        exchange(space.new, live)
        previous = space.new
    except OSError as err:
        if err.errno not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
            raise
        os.rename(live, space.previous)
        os.rename(space.new, live)
        previous = space.previous
    _fsync_dir(live.parent)
    return previous


def recover(space: Workspace, live: Path) -> Path | None:
    """After a crash: whether the swap happened (finishing a half-done one). Returns where the
    old folder is when the new one is live, None when the live folder is still the old one."""
    try:
        staged_inode = int(json.loads(space.journal.read_text())["staged_inode"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # the swap never started
    if live.exists():
        if live.stat().st_ino != staged_inode:
            return None
        return space.new if space.new.exists() else space.previous
    if space.new.exists() and space.new.stat().st_ino == staged_inode:
        os.rename(space.new, live)  # crashed between the two renames: finish
        return space.previous
    if space.previous.exists():
        os.rename(space.previous, live)  # should not happen; put the old one back
    return None


def to_trash(previous: Path, trash: Path, instance_id: str, name: str) -> Path | None:
    """Move the old folder to the trash; return its new path (None if nothing was there)."""
    if not previous.exists():
        return None
    stamp = datetime.now(UTC).strftime(TRASH_STAMP)
    target = trash / f"{stamp}-{instance_id}-{name}.before-restore"
    trash.mkdir(parents=True, exist_ok=True)
    n = 0
    while target.exists():
        n += 1
        target = target.with_name(f"{target.name}.{n}")
    os.rename(previous, target)
    return target
