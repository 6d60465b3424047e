"""The modes of `PF_DATA_DIR`: everything in it is the control plane's alone.

The control plane runs with umask 077, so whatever it creates is 0600/0700. At every start
`secure_data_dir` also tightens what an older version (or an operator) left more open:

- `PF_DATA_DIR` itself: 0711 — others may pass through it to the few folders below that are
  meant for instances, but not list it;
- `instances/`: 0711 (each instance's own folder is 0700 and belongs to its uid);
- `engines/` (binaries instances execute) and `run/` (the activity socket): 0711;
- everything else at the top (the control DB and its WAL, the secret key, backups, trash,
  scratch space, Litestream's and Caddy's state, zygote sockets): no access for others
  (files 0600, folders 0700; never following a symlink).

With the sandbox (`drivers/sandbox.py`) an instance sees nothing of `PF_DATA_DIR` but its own
folder anyway; these modes are what keeps the rest closed to any other local user, and to an
instance that runs unsandboxed (`PF_SANDBOX=off`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

UMASK = 0o077
TRAVERSABLE = 0o711
_TRAVERSABLE_CHILDREN = frozenset({"instances", "engines", "run"})


def secure_data_dir(data_dir: Path) -> None:
    """Create `data_dir` if needed and set the modes the module docstring lists."""
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, TRAVERSABLE)
    for name in _TRAVERSABLE_CHILDREN:
        (data_dir / name).mkdir(mode=0o700, exist_ok=True)
    with os.scandir(data_dir) as entries:
        for entry in entries:
            _close(entry, traversable=entry.name in _TRAVERSABLE_CHILDREN)


def _close(entry: os.DirEntry[str], *, traversable: bool) -> None:
    """Take group and other permissions away from a top-level entry (no symlink followed)."""
    try:
        info = entry.stat(follow_symlinks=False)
    except OSError:
        return
    if stat.S_ISLNK(info.st_mode):
        return
    if stat.S_ISDIR(info.st_mode):
        mode = TRAVERSABLE if traversable else 0o700
    else:
        mode = stat.S_IMODE(info.st_mode) & 0o700
    if stat.S_IMODE(info.st_mode) != mode:
        with contextlib.suppress(OSError):  # only root writes here: no link swapped in since
            os.chmod(entry.path, mode)
