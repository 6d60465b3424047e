"""Per-instance cgroups: a hard memory limit, a process limit and a CPU weight, by the kernel.

The process driver puts each instance's process in cgroups named `pocketfleet-ID` below its
own, writes the limits, and removes them when the instance stops. Two layouts:

- **cgroup v2** (one unified hierarchy at /sys/fs/cgroup): one folder below ours with
  `memory.max`, `pids.max` and `cpu.weight`. Our cgroup must be ours to manage (systemd's
  `Delegate=yes`, as deploy/'s unit has). cgroup v2 lets only leaves hold processes, so the
  control plane first moves itself into a leaf `control` of its cgroup and enables the
  controllers its cgroup has for the children (`claim_v2`); instances are the leaf's
  siblings. (This path could not be run on the cgroup v1 machines the tests run on.)
- **cgroup v1** (one hierarchy per controller): a folder per controller below ours, where
  writable: `memory.limit_in_bytes`, `pids.max`, `cpu.shares` (1024 = weight 100).

Whatever is not available is skipped with a debug line: `RLIMIT_NPROC` and `RLIMIT_AS`,
set for every instance by the driver, stay as the backstop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PREFIX = "pocketfleet-"
_V1_CONTROLLERS = ("memory", "pids", "cpu")
_V2_CONTROLLERS = ("memory", "pids", "cpu")
_V1_SHARES_PER_WEIGHT = 1024 / 100


def _own_cgroups() -> list[tuple[list[str], str]]:
    """`/proc/self/cgroup` as (controllers, path) pairs; v2's line has no controllers."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    pairs = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        pairs.append(([c for c in controllers.split(",") if c], path))
    return pairs


def _writable(folder: Path) -> bool:
    return folder.is_dir() and os.access(folder, os.W_OK)


@dataclass(frozen=True)
class InstanceCgroups:
    """Where this control plane can make per-instance cgroups: `v1` maps a controller to our
    folder of it; `v2` is our folder in the unified hierarchy with `v2_controllers` delegated.
    Use `InstanceCgroups.here()`."""

    v1: dict[str, Path] = field(default_factory=dict)
    v2: Path | None = None
    v2_controllers: frozenset[str] = frozenset()

    @classmethod
    def here(cls) -> InstanceCgroups:
        v1: dict[str, Path] = {}
        v2: Path | None = None
        delegated: frozenset[str] = frozenset()
        unified = (CGROUP_ROOT / "cgroup.controllers").is_file()
        for controllers, path in _own_cgroups():
            relative = path.lstrip("/")
            if not controllers and unified:
                folder = claim_v2(CGROUP_ROOT / relative)
                with contextlib.suppress(OSError):
                    listed = (folder / "cgroup.subtree_control").read_text().split()
                    delegated = frozenset(listed) & frozenset(_V2_CONTROLLERS)
                    if delegated and _writable(folder):
                        v2 = folder
            for controller in controllers:
                if controller in _V1_CONTROLLERS:
                    folder = CGROUP_ROOT / controller / relative
                    if _writable(folder):
                        v1[controller] = folder
        return cls(v1=v1, v2=v2, v2_controllers=delegated if v2 else frozenset())

    def folders(self, instance_id: str) -> list[Path]:
        """The instance's cgroup folders (existing or not)."""
        if not instance_id.isalnum():
            return []
        name = CGROUP_PREFIX + instance_id
        found = [parent / name for parent in self.v1.values()]
        if self.v2 is not None:
            found.append(self.v2 / name)
        return found

    def join(
        self, instance_id: str, pid: int, *, memory_bytes: int, max_processes: int, cpu_weight: int
    ) -> None:
        """Create the instance's cgroups with these limits and move `pid` into them."""
        if not instance_id.isalnum():
            return
        name = CGROUP_PREFIX + instance_id
        limits_v1 = {
            "memory": {"memory.limit_in_bytes": memory_bytes},
            "pids": {"pids.max": max_processes},
            "cpu": {"cpu.shares": max(2, round(cpu_weight * _V1_SHARES_PER_WEIGHT))},
        }
        for controller, parent in self.v1.items():
            _enter(parent / name, pid, limits_v1[controller])
        if self.v2 is not None:
            limits_v2 = {
                "memory": {"memory.max": memory_bytes, "memory.swap.max": 0},
                "pids": {"pids.max": max_processes},
                "cpu": {"cpu.weight": cpu_weight},
            }
            files = {k: v for c in self.v2_controllers for k, v in limits_v2[c].items()}
            _enter(self.v2 / name, pid, files)

    def drop(self, instance_id: str) -> None:
        self.drop_all(self.folders(instance_id))

    def drop_all(self, folders: Iterable[Path]) -> None:
        for folder in dict.fromkeys(folders):
            drop_cgroup(folder)


def claim_v2(folder: Path) -> Path:
    """Make our cgroup v2 `folder` able to hold instance cgroups: move this process into a
    leaf `control` below it and enable, for the children, the controllers `folder` has.
    Returns the folder instances go under (`folder`, or its parent when we already run in
    `control`). Nothing changes when `folder` is not writable (not delegated to us)."""
    if folder.name == _LEAF and (folder.parent / "cgroup.subtree_control").is_file():
        return folder.parent
    if not _writable(folder) or folder == CGROUP_ROOT:
        return folder
    try:
        available = set((folder / "cgroup.controllers").read_text().split())
        wanted = available & set(_V2_CONTROLLERS)
        if not wanted:
            return folder
        leaf = folder / _LEAF
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
        enable = " ".join(f"+{name}" for name in sorted(wanted))
        (folder / "cgroup.subtree_control").write_text(enable)
    except OSError as err:
        log.debug("cannot claim cgroup %s for instances: %s", folder, err)
    return folder


_LEAF = "control"


def _enter(folder: Path, pid: int, files: dict[str, int]) -> None:
    try:
        folder.mkdir(exist_ok=True)
        for name, value in files.items():
            try:
                (folder / name).write_text(str(value))
            except FileNotFoundError:  # e.g. memory.swap.max without swap accounting
                log.debug("cgroup %s has no %s", folder, name)
        (folder / "cgroup.procs").write_text(str(pid))
    except OSError as err:
        log.debug("cannot use cgroup %s for pid %d: %s", folder, pid, err)


def cgroups_of(pid: int) -> list[Path]:
    """The per-instance cgroup folders `pid` runs in (those named by us)."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if not Path(path).name.startswith(CGROUP_PREFIX):
                continue
            relative = path.lstrip("/")
            names = [c for c in controllers.split(",") if c in _V1_CONTROLLERS]
            if not controllers:
                found.append(CGROUP_ROOT / relative)
            found.extend(CGROUP_ROOT / name / relative for name in names)
    return found


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
