"""The `/etc` of instance sandboxes: a copy of the few host files a server needs, bound once.

Binding each of `SYSTEM_FILES` into every sandbox cost about 2 ms of each start (a bind and a
read-only remount apiece); one folder holding copies of them costs one bind. `SandboxEtc`
keeps that folder under `PF_DATA_DIR/sandbox/` and follows the host: `current()` compares the
sources' modification times and sizes (a few `stat` calls) and, when one changed (a new
`resolv.conf`, updated CA certificates), builds a new generation next to the old one and
switches to it; sandboxes built from the old one keep it (a bind mount holds its folder), and
generations older than the previous one are removed.

Copies keep symbolic links as links (`/etc/ssl/certs` is mostly links into
`/usr/share/ca-certificates`, which every sandbox sees) and follow the link of a top-level
entry (`/etc/localtime`). Everything in the folder is root's and readable by all (it is what
every Debian system shows every user in `/etc`): nothing secret is copied.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
from pathlib import Path

# What a server needs from /etc: name resolution, certificates, time zone and MIME types.
SYSTEM_FILES = (
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "localtime",
    "mime.types",
    "ssl/certs",
    "ssl/openssl.cnf",
)
_HOST_ETC = Path("/etc")
_KEEP_GENERATIONS = 2


class SandboxEtc:
    """The folder bound as `/etc` in every sandbox; see the module docstring."""

    def __init__(self, folder: Path, host_etc: Path = _HOST_ETC) -> None:
        self.folder = folder
        self.host_etc = host_etc
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[str, int, int], ...] | None = None
        self._current: Path | None = None

    def current(self) -> Path:
        """The folder with up-to-date copies (built now if the host's files changed)."""
        stamp = self._sources_stamp()
        with self._lock:
            if self._current is None or stamp != self._stamp:
                self._current = self._build(stamp)
                self._stamp = stamp
            return self._current

    def _sources_stamp(self) -> tuple[tuple[str, int, int], ...]:
        stamp = []
        for name in SYSTEM_FILES:
            try:
                info = (self.host_etc / name).stat()
                stamp.append((name, info.st_mtime_ns, info.st_size))
            except OSError:
                stamp.append((name, 0, -1))
        return tuple(stamp)

    def _build(self, stamp: tuple[tuple[str, int, int], ...]) -> Path:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        digest = hashlib.sha256(repr(stamp).encode()).hexdigest()[:16]
        generation = self.folder / f"etc-{digest}"
        if not generation.is_dir():
            building = self.folder / f".{generation.name}.{os.getpid()}.tmp"
            shutil.rmtree(building, ignore_errors=True)
            building.mkdir(mode=0o755)
            for name in SYSTEM_FILES:
                self._copy(self.host_etc / name, building / name)
            os.rename(building, generation)
        self._prune(keep=generation)
        return generation

    @staticmethod
    def _copy(source: Path, target: Path) -> None:
        if not source.exists():
            return
        target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copyfile(source, target)  # follows a top-level link (/etc/localtime)
        for path in (target, *(target.rglob("*") if target.is_dir() else ())):
            if not path.is_symlink():
                path.chmod(0o755 if path.is_dir() else 0o644)

    def _prune(self, keep: Path) -> None:
        generations = sorted(
            (p for p in self.folder.glob("etc-*") if p != keep),
            key=lambda p: p.stat().st_mtime,
        )
        for old in generations[: max(0, len(generations) - (_KEEP_GENERATIONS - 1))]:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)
