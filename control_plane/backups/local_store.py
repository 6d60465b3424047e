"""The local `BackupStore`: a folder (`PF_DATA_DIR/backups/`) laid out like the bucket.

Uploads are written to a temporary file beside the target, fsynced, read back and hashed, then
renamed into place: a key exists only complete and verified. Litestream writes its file
replicas under `replicas/` itself.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from control_plane.backups.store import (
    BackupStore,
    ObjectInfo,
    Progress,
    StoreError,
    Uploaded,
    no_progress,
)

_CHUNK = 1 << 20


def sha256_file(path: Path, progress: Progress = no_progress) -> tuple[int, str]:
    """Size and SHA-256 (hex) of a file."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            progress(len(chunk))
    return size, digest.hexdigest()


class LocalStore(BackupStore):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root.absolute()

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts):
            raise StoreError(f"invalid key {key!r}")
        return self.root.joinpath(*parts)

    def describe(self) -> str:
        return str(self.root)

    def ensure_ready(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as err:
            raise StoreError(f"cannot create {self.root}: {err}") from err

    def upload(
        self,
        key: str,
        source: Path,
        sha256: str,
        *,
        on_started: Callable[[str], None] | None = None,
        progress: Progress = no_progress,
    ) -> Uploaded:
        target = self._path(key)
        tmp = target.with_name(f".{target.name}.partial")
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with source.open("rb") as src, tmp.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                    progress(len(chunk))
                dst.flush()
                os.fsync(dst.fileno())
            size, got = sha256_file(tmp)
            if got != sha256 or size != source.stat().st_size:
                raise StoreError(f"{key}: stored copy does not match (sha256 {got})")
            os.replace(tmp, target)
        except OSError as err:
            raise StoreError(f"cannot store {key} in {self.root}: {err}") from err
        finally:
            tmp.unlink(missing_ok=True)
        return Uploaded(key, size, got)

    def abort(self, key: str, upload_id: str) -> None:
        target = self._path(key)
        target.with_name(f".{target.name}.partial").unlink(missing_ok=True)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            info = self._path(key).stat()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StoreError(f"cannot read {key}: {err}") from err
        return ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))

    def download(self, key: str, dest: Path, *, progress: Progress = no_progress) -> int:
        source = self._path(key)
        size = 0
        try:
            with source.open("rb") as src, dest.open("wb") as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
                    size += len(chunk)
                    progress(len(chunk))
        except OSError as err:
            raise StoreError(f"cannot read {key}: {err}") from err
        return size

    def iter_bytes(self, key: str, chunk_size: int = _CHUNK) -> Iterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except OSError as err:
            raise StoreError(f"cannot read {key}: {err}") from err
        with handle:
            while chunk := handle.read(chunk_size):
                yield chunk

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        except OSError as err:
            raise StoreError(f"cannot delete {key}: {err}") from err

    def list(self, prefix: str) -> list[ObjectInfo]:
        found: list[ObjectInfo] = []
        if not self.root.is_dir():
            return found
        folder, _, _ = prefix.rpartition("/")
        start = self._path(folder) if folder else self.root
        for parent, _dirs, files in os.walk(start):
            for name in files:
                path = Path(parent, name)
                key = path.relative_to(self.root).as_posix()
                if not key.startswith(prefix) or name.endswith(".partial"):
                    continue
                try:
                    info = path.stat()
                except FileNotFoundError:
                    continue
                found.append(
                    ObjectInfo(key, info.st_size, datetime.fromtimestamp(info.st_mtime, UTC))
                )
        return sorted(found, key=lambda item: item.key)

    def replica_times(self, objects: Sequence[ObjectInfo]) -> dict[str, datetime]:
        """Litestream sets each LTX file's modification time to its header time, and reads
        that: the listed time is it."""
        return {item.key: item.modified for item in objects}

    def replica_config(self, path: str) -> dict[str, object]:
        return {"type": "file", "path": str(self._path(path))}

    def replica_env(self) -> dict[str, str]:
        return {}
