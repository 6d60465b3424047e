"""The `BackupStore` seam: where snapshots and Litestream replicas live, off the machine.

Two backends share one interface: an S3-compatible bucket (`s3_store.S3Store`, chosen when
`PF_S3_BUCKET` is set) and a local folder (`local_store.LocalStore`, `PF_DATA_DIR/backups/`).
Keys are `/`-separated paths inside the bucket (or folder):

    backups/INSTANCE_ID/STAMP-SNAPSHOT_ID.tar.gz      snapshots (archive + manifest)
    replicas/INSTANCE_ID/DB_NAME/ltx/LEVEL/*.ltx      Litestream's replica of each database
    replicas/INSTANCE_ID/gN/DB_NAME/ltx/LEVEL/*.ltx   ... in generation N (`generations`)

Contract, for every method: blocking (async callers use `asyncio.to_thread`); transient
failures (unreachable, 5xx, throttling) are retried with exponential back-off before a
`StoreError` is raised; a missing key is `None` from `stat` and `StoreError` elsewhere.
`upload` returns only after the stored object was verified (size, and a checksum the store
computed over the bytes it received) and aborts what it started when it fails.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from control_plane.settings import Settings

Progress = Callable[[int], None]
"""Called with the number of bytes just transferred."""


class StoreError(Exception):
    """The store failed (after retries) or refused; the message says why."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime


@dataclass(frozen=True)
class Uploaded:
    """A verified object: `size` bytes whose SHA-256 is `sha256`."""

    key: str
    size: int
    sha256: str


def no_progress(_: int) -> None:
    """A `Progress` that ignores it."""


class BackupStore(ABC):
    kind: str  # "s3" or "local"

    @abstractmethod
    def describe(self) -> str:
        """Where objects go, for people (`s3://bucket` or a folder); never a secret."""

    @abstractmethod
    def ensure_ready(self) -> None:
        """Check the bucket (or folder) is usable, creating the local folder if needed."""

    @abstractmethod
    def upload(
        self,
        key: str,
        source: Path,
        sha256: str,
        *,
        on_started: Callable[[str], None] | None = None,
        progress: Progress = no_progress,
    ) -> Uploaded:
        """Store the file `source` (whose SHA-256 is `sha256`) at `key`, then verify it.

        Large files go in parts (S3 multipart); `on_started(upload_id)` is called once a
        multipart upload exists, so that a crash can be cleaned up later with `abort`. On any
        failure the partial upload is aborted (best effort) and `StoreError` raised.
        """

    @abstractmethod
    def abort(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload left behind (idempotent)."""

    @abstractmethod
    def stat(self, key: str) -> ObjectInfo | None:
        """Size and time of `key`, or None when it does not exist."""

    @abstractmethod
    def download(self, key: str, dest: Path, *, progress: Progress = no_progress) -> int:
        """Copy `key` into the file `dest` (replaced); return its size."""

    @abstractmethod
    def iter_bytes(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The content of `key`, in chunks (for streaming it to a client)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete `key` (idempotent)."""

    @abstractmethod
    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, in key order."""

    @abstractmethod
    def replica_times(self, objects: Sequence[ObjectInfo]) -> dict[str, datetime]:
        """The time Litestream gives each of the replica files `objects` (from `list`), by
        key: the creation time in the LTX file's header, in milliseconds, which its
        `restore -timestamp` compares a moment with. A file gone meanwhile is left out.

        The time `list` gives is not always it: S3 lists the upload time in whole seconds."""

    @abstractmethod
    def replica_config(self, path: str) -> dict[str, object]:
        """Litestream's `replica:` section replicating to `path` (a key prefix)."""

    @abstractmethod
    def replica_env(self) -> dict[str, str]:
        """Environment variables Litestream needs for this store (credentials, region)."""


def snapshot_key(instance_id: str, stamp: str, snapshot_id: str) -> str:
    return f"backups/{instance_id}/{stamp}-{snapshot_id}.tar.gz"


def make_store(settings: Settings) -> BackupStore:
    """S3 when `PF_S3_BUCKET` is set, else the local folder `PF_DATA_DIR/backups/`."""
    if settings.s3_bucket:
        from control_plane.backups.s3_store import S3Store

        return S3Store(settings)
    from control_plane.backups.local_store import LocalStore

    return LocalStore(settings.backups_dir)
