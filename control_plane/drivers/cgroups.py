"""Per-instance memory cgroups (cgroup v1), where our own cgroup lets us create them.

The process driver puts each instance in `pocketfleet-ID` under its own memory cgroup, with
`memory.limit_in_bytes` as the hard limit, and removes it when the instance stops; without a
writable cgroup v1 memory controller this is skipped silently.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
CGROUP_PREFIX = "pocketfleet-"


def memory_cgroup_parent() -> Path | None:
    """Our own cgroup v1 memory folder if we may create child cgroups in it, else None."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            folder = CGROUP_V1_MEMORY / path.lstrip("/")
            if (folder / "memory.limit_in_bytes").is_file() and os.access(folder, os.W_OK):
                return folder
    return None


def cgroup_of(pid: int) -> Path | None:
    """The per-instance memory cgroup `pid` runs in, if it runs in one of ours."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if "memory" in controllers.split(",") and Path(path).name.startswith(CGROUP_PREFIX):
                return CGROUP_V1_MEMORY / path.lstrip("/")
    return None


def drop_cgroup(folder: Path) -> None:
    """Remove an (emptied) cgroup folder, retrying briefly while the kernel lets go of it."""
    for _ in range(50):
        try:
            folder.rmdir()
            return
        except OSError as err:
            if err.errno != errno.EBUSY:
                if err.errno != errno.ENOENT:
                    log.debug("cannot remove cgroup %s: %s", folder, err)
                return
            time.sleep(0.01)
