"""An instance's folder on the host, as both drivers (`process.py`, `docker.py`) keep it.

- `prepare` creates the layout before anything of the instance runs: the root mode 0700 (its
  parent 0711: others may pass through, never list), the engine's folders, and what the engine
  writes there (`Engine.prepare`); as root, all of it belongs to the instance's uid, and every
  change of ownership is an lchown (never follows a tenant's link). The root itself must be a
  folder, never a link. `reached_by_path`: the instance's processes reach the folder through
  the host's path (the process driver, not the docker one, which bind-mounts it), so every
  ancestor must let its uid through (o+x). Any failure is a `StartError`.
- `open_log` prepares the folder and opens the log for appending (owned by the uid), for the
  process driver, whose children write their stdout and stderr there.
- `move_or_delete` is what a removal does with the folder: moved to `keep_at` (parents
  created; `.N` appended while that name exists) or deleted.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from control_plane.drivers.base import InstanceSpec, StartError


def prepare(spec: InstanceSpec, uid: int | None, *, reached_by_path: bool) -> None:
    """Create the instance's folder layout, owned by `uid` (None: leave it ours). Blocking."""
    root = spec.layout.root.absolute()
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        root.parent.chmod(0o711)
        if uid is not None and reached_by_path:
            for folder in root.parent.parents:
                info = folder.stat()
                if not info.st_mode & 0o001 and info.st_uid != uid:
                    raise StartError(
                        f"instance {spec.id}: {folder} is not traversable by uid {uid} "
                        "(it needs o+x, e.g. mode 0711)"
                    )
        root.mkdir(mode=0o700, exist_ok=True)
        if root.is_symlink() or not root.is_dir():
            raise StartError(f"instance {spec.id}: {root} is not a folder")
        root.chmod(0o700)
        first_time = uid is not None and root.stat().st_uid != uid
        for folder in spec.layout.folders():
            folder.mkdir(mode=0o700, exist_ok=True)
        written = spec.engine.prepare(spec.version, spec.layout)
        if uid is None:
            return
        if first_time:  # hand over the whole tree (lchown: never follow a tenant's symlink)
            for parent, dirs, files in os.walk(root):
                for name in (*dirs, *files):
                    os.chown(os.path.join(parent, name), uid, uid, follow_symlinks=False)
        else:
            for path in (*spec.layout.folders(), *written):
                os.chown(path, uid, uid, follow_symlinks=False)
        os.chown(root, uid, uid, follow_symlinks=False)
    except OSError as err:
        raise StartError(f"instance {spec.id}: cannot prepare its folder: {err}") from err


def open_log(spec: InstanceSpec, uid: int | None) -> int:
    """Prepare the folder (`prepare`, reached by path); return the log opened for appending,
    owned by `uid`. Blocking."""
    prepare(spec, uid, reached_by_path=True)
    try:
        log_fd = os.open(
            spec.layout.log_file,
            os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o600,
        )
    except OSError as err:
        raise StartError(f"instance {spec.id}: cannot prepare its folder: {err}") from err
    try:
        if uid is not None:
            os.fchown(log_fd, uid, uid)
    except OSError as err:
        os.close(log_fd)
        raise StartError(f"instance {spec.id}: cannot prepare its folder: {err}") from err
    return log_fd


def move_or_delete(root: Path, keep_at: Path | None) -> None:
    """Move the folder `root` to `keep_at` (or `keep_at.N`, the first N free) or delete it;
    nothing if it is gone. Blocking."""
    if not root.exists():
        return
    if keep_at is None:
        shutil.rmtree(root)
        return
    target, n = keep_at, 0
    while target.exists():
        n += 1
        target = keep_at.with_name(f"{keep_at.name}.{n}")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(root, target)
