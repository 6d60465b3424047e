"""Staged uploads left behind by a crashed process are removed when the app starts.

Uploads are staged in `DATA_DIR/.pf_uploads/` (`core.files.stage`) and either placed or
discarded by the request that staged them; a process killed in between (`kill -9`, a crash, a
full disk) leaves them there, and nothing else would ever remove them.

Contract: `claim(data_dir)` is called once by every `App` on `data_dir` and returns a
`StagingClaim` the app holds until it closes (`close()`). The claim is a shared `flock` on
`DATA_DIR/.pf_uploads.lock`: only the app that finds no other app holding one (the first
process on the folder, e.g. the server after a crash) empties the staging folder, under an
exclusive lock, before it takes its shared one. So a second `App` on a folder that is being
served (e.g. `superuser upsert` next to `serve`) never removes the server's uploads in flight.
A crashed process's lock goes with it (the kernel drops it). `claim(...).swept` is how many
entries were removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import BinaryIO

LOCK_NAME = ".pf_uploads.lock"

log = logging.getLogger("instance_runtime")


class StagingClaim:
    """See the module docstring: holds the shared lock until `close()`."""

    def __init__(self, lock: BinaryIO, swept: int) -> None:
        self._lock = lock
        self.swept = swept

    def close(self) -> None:
        self._lock.close()  # closing the file drops the lock


def _sweep(folder: Path) -> int:
    """Remove every entry of `folder` (never following a symlink); how many went."""
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed += 1
    return removed


def claim(data_dir: Path) -> StagingClaim:
    """See the module docstring."""
    from instance_runtime.core.files import STAGING  # core.files imports core.app

    fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    lock = os.fdopen(fd, "r+b")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # another app serves this folder: its uploads are not ours
            fcntl.flock(lock, fcntl.LOCK_SH)
            return StagingClaim(lock, 0)
        swept = _sweep(data_dir / STAGING)
        fcntl.flock(lock, fcntl.LOCK_SH)
    except BaseException:
        lock.close()
        raise
    if swept:
        log.info("removed %d staged upload(s) left by an earlier process", swept)
    return StagingClaim(lock, swept)
