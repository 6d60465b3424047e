"""How much disk an instance folder takes: one bounded walk that trusts nothing inside it.

The folder belongs to a tenant who runs code in it, so the walk assumes hostile contents:

- **Nothing is followed.** Every folder is opened relative to its parent's descriptor with
  `O_NOFOLLOW | O_DIRECTORY`, every entry examined with `lstat` semantics (`fstatat(...,
  AT_SYMLINK_NOFOLLOW)`): a symlink counts as the link itself, wherever it points, and a folder
  swapped for a link during the walk is refused by the kernel, not entered.
- **One filesystem.** Entries on another device (mount points, bind mounts) are neither
  counted nor entered.
- **Allocated space, each inode once.** Usage is `st_blocks * 512` (what the filesystem really
  holds: a sparse file counts what is written, not its apparent size), and a file with several
  hard links counts once — the same figure as `du -sx --block-size=1`.
- **Bounded cost.** At most `max_entries` entries are examined and folders are entered to at
  most `max_depth` levels (one open descriptor per level). A walk that reaches either bound
  stops there and says so (`complete=False`): its figure is a lower bound, and callers treat
  such a folder as over any quota (a tenant cannot hide data behind millions of files).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

BLOCK = 512  # the unit of st_blocks, whatever the filesystem's block size
MAX_DEPTH = 100
DEFAULT_MAX_ENTRIES = 200_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class DiskUsage:
    """The result of one walk: allocated bytes, entries examined (the folder itself included)
    and whether the walk saw everything (`complete`) or stopped at one of its bounds (or met a
    folder it could not read)."""

    bytes: int
    entries: int
    complete: bool


class _Unreadable(Exception):
    pass


def measure(
    root: Path, *, max_entries: int = DEFAULT_MAX_ENTRIES, max_depth: int = MAX_DEPTH
) -> DiskUsage:
    """Walk `root` (a folder, not a link to one) and add up what it holds on disk.

    Raises `FileNotFoundError` when `root` does not exist, `NotADirectoryError` or `OSError`
    (ELOOP) when it is not a folder or is a symlink. Entries that vanish during the walk are
    skipped (a running instance changes its files all the time).
    """
    # one (descriptor, names still to look at) per folder being walked, the root first
    stack: list[tuple[int, list[str]]] = [(os.open(root, _DIR_FLAGS), [])]
    try:
        root_fd = stack[0][0]
        top = os.fstat(root_fd)
        device = top.st_dev
        total = top.st_blocks * BLOCK
        entries = 1
        complete = True
        linked: set[int] = set()  # inodes with several links counted so far (one device)
        try:
            stack[0] = (root_fd, _names(root_fd, max_entries))
        except _Unreadable:
            complete = False
        while stack:
            fd, names = stack[-1]
            if not names:
                os.close(fd)
                stack.pop()
                continue
            if entries >= max_entries:
                complete = False
                break
            name = names.pop()
            entries += 1
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                continue  # gone meanwhile
            if info.st_dev != device:
                continue  # another filesystem mounted here: not this instance's disk
            if stat.S_ISDIR(info.st_mode):
                total += info.st_blocks * BLOCK
                if len(stack) >= max_depth:
                    complete = False
                    continue
                child = _open_folder(fd, name, info)
                if child is None:
                    continue
                stack.append((child, []))
                try:
                    stack[-1] = (child, _names(child, max_entries - entries + 1))
                except _Unreadable:
                    complete = False
                continue
            if info.st_nlink > 1:
                if info.st_ino in linked:
                    continue
                linked.add(info.st_ino)
            total += info.st_blocks * BLOCK
        return DiskUsage(bytes=total, entries=entries, complete=complete)
    finally:
        for fd, _names_left in stack:
            with contextlib.suppress(OSError):
                os.close(fd)


def _names(fd: int, limit: int) -> list[str]:
    """At most `limit` names in the folder open as `fd` (gone: none)."""
    try:
        with os.scandir(fd) as listing:
            return [entry.name for entry in itertools.islice(listing, limit)]
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise _Unreadable() from exc


def _open_folder(parent_fd: int, name: str, seen: os.stat_result) -> int | None:
    """Open `name` under `parent_fd` as a folder, refusing links; None when it is gone, is no
    longer a folder, or is another folder than the one `seen` (swapped during the walk)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        return None
    return fd
