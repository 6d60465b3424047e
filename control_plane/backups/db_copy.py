"""Consistent copies of an instance's SQLite databases, taken as the instance's uid.

A database in an instance folder is the tenant's to replace at any moment, by a symbolic link
to another tenant's database for one. So the control plane (root) never opens one itself:
`copy_databases` runs this module as a child process (`python -I -m
control_plane.backups.db_copy`) as the instance's uid (no supplementary groups, a clean
environment, umask 077, a timeout), handing it two descriptors: the instance folder (opened by
the parent from `PF_DATA_DIR/instances/ID`, which only root can change) and an empty output
folder in the parent's private scratch space. The child, for each database:

1. opens the database's folder below the instance folder, one component at a time with
   `O_NOFOLLOW|O_DIRECTORY` (`safe_fs.open_dir`): a link on any component is refused;
2. requires the database and its `-wal`, `-shm` and `-journal` files to be absent or regular
   files of its own uid with a single link (no link, FIFO, device or foreign file);
3. opens it through the VFS `pf-noresolve` as `/proc/self/fd/DIR/NAME`: SQLite's own
   `xFullPathname` resolves symbolic links in user space (it would turn the descriptor back
   into a path, and a link into its target); this VFS keeps the name as given, so the kernel
   resolves `DIR` to the very directory opened in 1, and SQLite opens the database, its WAL
   and its shared memory with `O_NOFOLLOW` below it;
4. copies it with the online backup API in one step (one read transaction: in WAL mode the
   instance keeps writing) into `OUT/N.db`, checks the copy with `PRAGMA integrity_check`, and
   makes sure the database is still the inode checked in 2;
5. prints one JSON line: `{"rel", "status": copied|absent|refused|corrupt|error, "copy",
   "reason"}`.

Because the child is the instance's uid, whatever it might still be made to open is only what
that uid can open anyway (never another tenant's folder, nor the control plane's files), and
whatever SQLite creates or writes (a `-shm`, a checkpoint) belongs to the instance. A FIFO that
would block it, or any other stall, ends at the timeout with the child killed. The parent
treats the output folder as the tenant's too (the child runs as the tenant's uid): it reads the
copies back with `safe_fs.open_own_file`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import apsw

from control_plane import safe_fs

VFS_NAME = "pf-noresolve"
SIDE_FILES = ("-wal", "-shm", "-journal")
_BASE_TIMEOUT_S = 120.0
_BYTES_PER_S = 20_000_000  # the slowest copy rate allowed for before the child is killed
_SPARE_BYTES = 64 * 1024 * 1024
_CHILD_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}


class DatabaseCopyError(Exception):
    """The copy could not run (timeout, no space, the child failed); the message says why."""


@dataclass(frozen=True)
class CopyResult:
    rel: str
    status: str  # copied | absent | refused | corrupt | error
    copy: str = ""  # the copy's name in the output folder, when copied
    reason: str = ""


class _NoResolve(apsw.VFS):
    """The default VFS, except that names are used as given (no symlink resolution)."""

    def __init__(self) -> None:
        super().__init__(VFS_NAME, base="")

    def xFullPathname(self, name: str) -> str:
        return name


_vfs: _NoResolve | None = None


def _register_vfs() -> None:
    global _vfs
    if _vfs is None:
        _vfs = _NoResolve()


# ----- the parent


def copy_databases(
    root_fd: int, rels: list[str], out_dir: Path, uid: int | None
) -> list[CopyResult]:
    """Copy the databases `rels` (relative paths) of the instance folder `root_fd` into the
    new folder `out_dir` (in private scratch space), in a child running as `uid` (None: as
    ourselves). Raises `DatabaseCopyError` when the child cannot do its work."""
    sizes = 0
    for rel in rels:
        for suffix in ("", "-wal"):
            with contextlib.suppress(OSError):  # refused or unreadable: the child says
                info = safe_fs.lstat_at(root_fd, rel + suffix)
                if info is not None and stat.S_ISREG(info.st_mode):
                    sizes += info.st_size
    out_dir.mkdir(mode=0o700)
    out_fd = safe_fs.open_anchor(out_dir)
    try:
        if uid is not None:
            os.fchown(out_fd, uid, uid)
        free = shutil.disk_usage(out_dir).free
        if free < sizes + _SPARE_BYTES:
            raise DatabaseCopyError(
                f"not enough free disk to copy the databases ({sizes} bytes, {free} free)"
            )
        argv = [sys.executable, "-I", "-m", __name__, str(root_fd), str(out_fd), *rels]
        try:
            done = subprocess.run(
                _as_user(argv, uid),
                pass_fds=(root_fd, out_fd),
                env=_CHILD_ENV,
                cwd="/",
                umask=0o077,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_BASE_TIMEOUT_S + sizes / _BYTES_PER_S,
                check=False,
            )
        except subprocess.TimeoutExpired as err:
            raise DatabaseCopyError("copying the databases took too long; stopped") from err
    finally:
        os.close(out_fd)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise DatabaseCopyError(f"copying the databases failed: {tail[0]}")
    results: dict[str, CopyResult] = {}
    for line in done.stdout.decode(errors="replace").splitlines():
        try:
            item = json.loads(line)
            result = CopyResult(
                str(item["rel"]), str(item["status"]), str(item["copy"]), str(item["reason"])
            )
        except (ValueError, KeyError, TypeError) as err:
            raise DatabaseCopyError(f"the database copier said {line[:200]!r}") from err
        results[result.rel] = result
    missing = [rel for rel in rels if rel not in results]
    if missing:
        raise DatabaseCopyError(f"the database copier left out {', '.join(missing)}")
    return [results[rel] for rel in rels]


def _as_user(argv: list[str], uid: int | None) -> list[str]:
    """`argv` run as `uid` (gid `uid`, no supplementary groups) through util-linux's
    `setpriv`, which switches only once the program is found (the interpreter may live where
    `uid` cannot look, as under /root)."""
    if uid is None:
        return argv
    setpriv = shutil.which("setpriv", path=_CHILD_ENV["PATH"])
    if setpriv is None:
        raise DatabaseCopyError("setpriv (util-linux) is not installed")
    return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", *argv]


# ----- the child


def _copy_one(root_fd: int, out_fd: int, rel: str, index: int) -> CopyResult:
    parts = safe_fs.components(rel)
    folder, name = "/".join(parts[:-1]), parts[-1]
    try:
        dir_fd = safe_fs.open_dir(root_fd, folder) if folder else os.dup(root_fd)
    except FileNotFoundError:
        return CopyResult(rel, "absent")
    try:
        uid = os.geteuid()
        before = safe_fs.lstat_at(dir_fd, name)
        if before is None:
            return CopyResult(rel, "absent")
        for suffix in ("", *SIDE_FILES):
            info = before if not suffix else safe_fs.lstat_at(dir_fd, name + suffix)
            problem = None if info is None else safe_fs.not_own_file(info, uid)
            if problem is not None:
                return CopyResult(rel, "refused", reason=f"{rel}{suffix} is {problem}")
        copy = f"{index}.db"
        _register_vfs()
        source = apsw.Connection(
            f"/proc/self/fd/{dir_fd}/{name}", flags=apsw.SQLITE_OPEN_READWRITE, vfs=VFS_NAME
        )
        try:
            source.set_busy_timeout(30_000)
            target = apsw.Connection(f"/proc/self/fd/{out_fd}/{copy}", vfs=VFS_NAME)
            try:
                with target.backup("main", source, "main") as backup:
                    backup.step(-1)
                problem = _integrity_problem(target)
            finally:
                target.close()
        finally:
            source.close()
        after = safe_fs.lstat_at(dir_fd, name)
        if after is None or (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
            return CopyResult(rel, "refused", reason=f"{rel} was replaced during the copy")
        if problem is not None:
            return CopyResult(rel, "corrupt", copy, problem)
        return CopyResult(rel, "copied", copy)
    except safe_fs.Refused as err:
        return CopyResult(rel, "refused", reason=str(err))
    except (apsw.Error, OSError) as err:
        return CopyResult(rel, "error", reason=f"{rel}: {err or type(err).__name__}")
    finally:
        os.close(dir_fd)


def _integrity_problem(conn: apsw.Connection) -> str | None:
    """None when `PRAGMA integrity_check` of the copy says ok (checked on the connection that
    wrote it), else what it says (first 5 lines)."""
    try:
        rows = list(conn.execute("PRAGMA integrity_check"))
    except apsw.Error as err:
        return str(err) or type(err).__name__
    result = "; ".join(str(row[0]) for row in rows[:5])
    return None if result == "ok" else result


def main(argv: list[str]) -> int:
    root_fd, out_fd, rels = int(argv[0]), int(argv[1]), argv[2:]
    for index, rel in enumerate(rels):
        try:
            result = _copy_one(root_fd, out_fd, rel, index)
        except safe_fs.Refused as err:
            result = CopyResult(rel, "refused", reason=str(err))
        line = {"rel": result.rel, "status": result.status}
        line.update(copy=result.copy, reason=result.reason)
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
