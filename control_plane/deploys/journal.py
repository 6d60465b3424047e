"""What a deploy writes before its switch, so that a control plane stopped in the middle of
one (a crash, `kill -9`, a power cut) can put the instance's previous folders back.

Before `switch.switch` moves anything, `write` records in the deploy's work folder, for each
code folder, the inode of the staged folder (`new`) and of the live one (`old`), each `None`
when absent, and syncs it to disk. Every move of a deploy is a rename on one filesystem, so
these inodes follow the folders wherever they went: after a crash, `put_back` finds the
previous live folder by its inode (still live, or in `new/`, `old/` or `undo/` of the work
folder) and renames it into place again, moving what stands there aside. Without a journal
the switch never began and the live folders were never touched.

Blocking; run in a thread, before the instance is started again.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import orjson

from control_plane import safe_fs
from control_plane.files.rules import CODE_FOLDERS

JOURNAL = "journal.json"
PLACES = ("new", "old", "undo")  # the work folder's subfolders a live folder can be in


def _inode(dir_fd: int, name: str) -> int | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_ino
    except FileNotFoundError:
        return None


def write(work: Path, staged: Path, root: Path, folders: list[str]) -> None:
    """Record the inodes of the staged and live `folders` in `work/journal.json` (synced)."""
    entries: dict[str, dict[str, int | None]] = {}
    root_fd = safe_fs.open_anchor(root) if root.is_dir() else None
    staged_fd = safe_fs.open_anchor(staged)
    try:
        for folder in folders:
            live = _inode(root_fd, folder) if root_fd is not None else None
            entries[folder] = {"new": _inode(staged_fd, folder), "old": live}
    finally:
        os.close(staged_fd)
        if root_fd is not None:
            os.close(root_fd)
    path = work / JOURNAL
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(orjson.dumps({"folders": entries}))
        out.flush()
        os.fsync(out.fileno())
    work_fd = safe_fs.open_anchor(work)
    try:
        os.fsync(work_fd)
    finally:
        os.close(work_fd)


def read(work: Path) -> dict[str, dict[str, int | None]] | None:
    """The journal of the deploy whose work folder is `work`; None when there is none (the
    switch never began) or it was cut off while it was written (nothing was moved yet)."""
    try:
        raw = (work / JOURNAL).read_bytes()
        folders = orjson.loads(raw)["folders"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(folders, dict):
        return None
    return {k: v for k, v in folders.items() if k in CODE_FOLDERS and isinstance(v, dict)}


def switched(root: Path, entries: dict[str, dict[str, int | None]]) -> bool:
    """Whether every folder of the journal is the staged one now (the switch completed)."""
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return False
    try:
        return all(_inode(root_fd, f) == inodes.get("new") for f, inodes in entries.items())
    finally:
        os.close(root_fd)


def put_back(work: Path, root: Path, entries: dict[str, dict[str, int | None]]) -> list[str]:
    """Make each folder of the journal what was live before the deploy; the folders that
    had to be moved. What stood in their place lands in `work/displaced/` (discarded with
    the work folder)."""
    moved: list[str] = []
    displaced = Path(tempfile.mkdtemp(prefix="displaced-", dir=work))
    root_fd = safe_fs.open_anchor(root)
    displaced_fd = safe_fs.open_anchor(displaced)
    places: dict[str, int] = {}
    try:
        for place in PLACES:
            with contextlib.suppress(FileNotFoundError):
                places[place] = safe_fs.open_anchor(work / place)
        for folder, inodes in entries.items():
            old = inodes.get("old")
            live = _inode(root_fd, folder)
            if live == old:
                continue  # never switched, or switched back already
            if live is not None:
                os.rename(folder, folder, src_dir_fd=root_fd, dst_dir_fd=displaced_fd)
            if old is not None:
                source = next((fd for fd in places.values() if _inode(fd, folder) == old), None)
                if source is None:
                    raise FileNotFoundError(f"the previous {folder} is nowhere in {work}")
                os.rename(folder, folder, src_dir_fd=source, dst_dir_fd=root_fd)
            moved.append(folder)
        os.fsync(root_fd)
    finally:
        for fd in (root_fd, displaced_fd, *places.values()):
            os.close(fd)
    return moved
