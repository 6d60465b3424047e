"""The switch of a deploy: the instance's three code folders exchanged with staged ones.

A deploy's private work folder (`PF_DATA_DIR/deploys/work/DEPLOY_ID`, root only, on the
instances' filesystem) holds `new/` (the staged folders, given to the instance's uid before the
switch) and `old/` (where the live folders land). For each code folder named, `switch` makes
the live one equal the staged one (absent when the staged set lacks it) with one
`renameat2(RENAME_EXCHANGE)` between descriptors (or, where the filesystem cannot exchange,
two renames), moving what was live into the `aside` folder. The renames name entries of the
instance's root opened with `O_NOFOLLOW` and of our private folder: no link is followed (a link
the tenant put in place of a code folder is itself moved aside). Undoing is the same call with
the roles turned: `switch(old, fresh_empty_folder, root, folders)`.

Blocking; run in a thread while the instance is stopped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import shutil
from pathlib import Path
from typing import Any

from control_plane import safe_fs
from control_plane.files.rules import CODE_FOLDERS

_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2
_libc: ctypes.CDLL | None = None


def _renameat2() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return getattr(_libc, "renameat2", None)


def rename_at(src_fd: int, src: str, dst_fd: int, dst: str, flags: int) -> None:
    """`renameat2(src_fd, src, dst_fd, dst, flags)`; OSError(ENOSYS) without it."""
    func = _renameat2()
    if func is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    if func(src_fd, os.fsencode(src), dst_fd, os.fsencode(dst), flags) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), src)


def _exists(dir_fd: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def switch(staged: Path, aside: Path, root: Path, folders: list[str], uid: int) -> None:
    """Make each of `folders` of the instance's `root` what `staged` holds under that name
    (nothing, when it holds nothing), moving what was live into `aside` (created empty). An
    instance that never started has no root yet: it is created as the driver does (0700,
    owned by `uid`)."""
    aside.mkdir(mode=0o700)
    try:
        root.mkdir(mode=0o700)
    except FileExistsError:
        pass
    else:
        os.chown(root, uid, uid, follow_symlinks=False)
    root_fd = safe_fs.open_anchor(root)
    try:
        staged_fd = safe_fs.open_anchor(staged)
        aside_fd = safe_fs.open_anchor(aside)
        try:
            for folder in folders:
                assert folder in CODE_FOLDERS
                new = _exists(staged_fd, folder)
                live = _exists(root_fd, folder)
                if new and live:
                    try:
                        rename_at(staged_fd, folder, root_fd, folder, _RENAME_EXCHANGE)
                        os.rename(folder, folder, src_dir_fd=staged_fd, dst_dir_fd=aside_fd)
                    except OSError as err:
                        if err.errno not in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                            raise
                        os.rename(folder, folder, src_dir_fd=root_fd, dst_dir_fd=aside_fd)
                        os.rename(folder, folder, src_dir_fd=staged_fd, dst_dir_fd=root_fd)
                elif new:
                    os.rename(folder, folder, src_dir_fd=staged_fd, dst_dir_fd=root_fd)
                elif live:
                    os.rename(folder, folder, src_dir_fd=root_fd, dst_dir_fd=aside_fd)
            os.fsync(root_fd)
        finally:
            os.close(staged_fd)
            os.close(aside_fd)
    finally:
        os.close(root_fd)


def carry_over(root: Path, staged: Path, folder: str, uid: int) -> None:
    """Copy the instance's own regular files of the live `folder` that `staged` lacks into
    it (for `?keep=true`); links, special and hard-linked files are left out."""
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return  # never started: nothing to keep
    try:
        try:
            live_fd = safe_fs.open_dir(root_fd, folder)
        except (FileNotFoundError, safe_fs.Refused):
            return
    finally:
        os.close(root_fd)
    try:
        (staged / folder).mkdir(mode=0o755, exist_ok=True)
        staged_fd = safe_fs.open_anchor(staged / folder)
        try:
            for entry in safe_fs.walk(live_fd):
                if entry.rel.split("/")[-1].startswith("."):
                    continue  # temporary files of uploads
                target = staged / folder / entry.rel
                if entry.is_dir:
                    if not target.exists():
                        target.mkdir(mode=0o755)
                    continue
                if not entry.is_file or target.exists() or not target.parent.is_dir():
                    continue
                folder_fd = safe_fs.open_anchor(target.parent)
                try:
                    safe_fs.copy_own_file(entry.dir_fd, entry.name, folder_fd, uid)
                    os.chmod(target, 0o644)
                except (safe_fs.Refused, FileNotFoundError, FileExistsError):
                    pass
                finally:
                    os.close(folder_fd)
        finally:
            os.close(staged_fd)
    finally:
        os.close(live_fd)


def code_bytes(root: Path) -> int:
    """Bytes of the regular files of the live code folders (what a deploy replaces)."""
    total = 0
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return 0  # never started
    try:
        for folder in CODE_FOLDERS:
            try:
                fd = safe_fs.open_dir(root_fd, folder)
            except (FileNotFoundError, safe_fs.Refused):
                continue
            try:
                total += sum(e.info.st_size for e in safe_fs.walk(fd) if e.is_file)
            finally:
                os.close(fd)
    finally:
        os.close(root_fd)
    return total


def hand_over(staged: Path, uid: int | None) -> None:
    """Give the staged folders (ours, private) to `uid`: code folders 0700, folders below
    0755, files 0644 (PocketBase serves pb_public)."""
    for top in CODE_FOLDERS:
        base = staged / top
        if not base.is_dir():
            continue
        for dirpath, _dirnames, filenames in os.walk(base):
            here = Path(dirpath)
            os.chmod(here, 0o700 if here == base else 0o755)
            if uid is not None:
                os.chown(here, uid, uid, follow_symlinks=False)
            for name in filenames:
                path = here / name
                os.chmod(path, 0o644)
                if uid is not None:
                    os.chown(path, uid, uid, follow_symlinks=False)


def discard(work: Path) -> None:
    """Remove a work folder (what was moved aside may hold the tenant's links: never
    followed)."""
    shutil.rmtree(work, ignore_errors=True)
