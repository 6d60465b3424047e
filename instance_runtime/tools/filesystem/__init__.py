"""Where record files live: the `Storage` seam (PocketBase's `tools/filesystem`), two backends.

`LocalStorage` (`local.py`) keeps every key as a file under a root folder (the runtime uses
`pb_data/storage`, so a record's file is `{collectionId}/{recordId}/{name}`); `S3Storage`
(`s3.py`) keeps it as an object of that key in a bucket (boto3, imported only when an
`S3Storage` is made). This package knows nothing of collections or settings (it must not
import `instance_runtime.core`).

Contract of every `Storage` (all methods are blocking: call them from a thread in async code):

- Keys are `/`-separated relative paths: not empty, no leading or trailing `/`, no empty, `.`
  or `..` segment, no backslash and no NUL. `check_key` enforces it; every method raises
  `InvalidKey` (a `ValueError`) for a key or prefix that breaks it, before touching anything,
  so no key can escape the root (or address another bucket prefix than the one meant).
- `put(key, src_path, content_type=None, metadata=None, md5=None)`: stores the local file
  `src_path` under `key` (replacing what was there) and removes `src_path`, with the content
  type and the `metadata` (PocketBase's `original-filename`) as PocketBase keeps them: S3 as
  the object's `Content-Type` and `x-amz-meta-*` headers, local disk in PocketBase's `KEY.attrs`
  sidecar (see `local.py`), which also holds the content's md5: `md5` is its digest when the
  caller computed it while writing `src_path` (else local disk reads the file once for it).
  Local: a rename when on the same filesystem (else copy then unlink). S3: a streamed
  (multipart for big files) upload, then the staged file is unlinked. Never holds the file in
  memory. On failure `src_path` is kept (the caller discards it) and nothing partial is
  visible under `key`.
- `put_bytes(key, data, content_type=None)`: stores a small blob (thumbnails, test files),
  with its content type as `put`; atomically as seen by readers.
- `open(key, start=0, end=None) -> Reader`: the bytes `[start, end)` of the object (`end`
  exclusive, `None` = to the end; the caller clamps the range to `stat().size`). Raises
  `FileNotFoundError` when the key does not exist. The `Reader` yields chunks of at most
  `CHUNK` bytes when iterated, has `read(n=-1)` and must be `close()`d (it is a context
  manager); nothing reads more than one chunk ahead.
- `stat(key) -> FileInfo | None`: size, last modification (UTC datetime) and the stored
  content type (`None` when none is kept: an S3 object without one, a local file without a
  sidecar); `None` if missing.
- `exists(key) -> bool`.
- `delete(key)`: removes the key; a missing key is not an error. Local: with its sidecar, and
  the folder holding it is removed too when it is left empty (PocketBase's
  `deleteEmptyRecordDir`).
- `delete_prefix(prefix)`: removes every key under the folder `prefix` (`prefix + "/"...`;
  `a/b` never touches `a/bc/...`); the prefix must be a valid key (so never everything).
  Raises `StorageError` listing what could not be deleted.
- `list_prefix(prefix) -> list[str]`: the keys under the folder `prefix`, recursively, sorted.
- `entries(prefix="") -> list[Entry]`: every key that starts with the string `prefix` (not a
  folder: `"@auto_"` matches `@auto_x.zip`; `""` is every key of the storage), recursively,
  with its size and last modification, sorted by key (one listing, no request per key).
- `close()`: releases clients/pools (idempotent).

Errors of the backend (I/O, S3 unreachable, access denied) surface as `StorageError` with the
backend's message, except `FileNotFoundError` from `open`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType

CHUNK = 1 << 16


class StorageError(Exception):
    """A backend operation failed (the message is the backend's)."""


class InvalidKey(StorageError, ValueError):
    """A key or prefix that could escape the storage root."""


@dataclass(frozen=True)
class FileInfo:
    size: int
    modified: datetime
    content_type: str | None = None


@dataclass(frozen=True)
class Entry:
    """One key of a listing (`Storage.entries`): its size and modification (no content type)."""

    key: str
    info: FileInfo


def check_key(key: str) -> str:
    """`key` if it is a valid storage key (see the module docstring), else `InvalidKey`."""
    if not isinstance(key, str) or not key:
        raise InvalidKey("empty storage key")
    if "\\" in key or "\x00" in key or key.startswith("/") or key.endswith("/"):
        raise InvalidKey(f"invalid storage key {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey(f"invalid storage key {key!r}")
    return key


def check_prefix(prefix: str) -> str:
    """A folder prefix: a valid key, a trailing `/` allowed (and dropped)."""
    return check_key(prefix[:-1] if isinstance(prefix, str) and prefix.endswith("/") else prefix)


class Reader(ABC):
    """A stream of one object's bytes (see `Storage.open`)."""

    @abstractmethod
    def read(self, n: int = -1) -> bytes: ...

    @abstractmethod
    def close(self) -> None: ...

    def __iter__(self) -> Iterator[bytes]:
        while chunk := self.read(CHUNK):
            yield chunk

    def __enter__(self) -> Reader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Storage(ABC):
    """See the module docstring for the contract."""

    @abstractmethod
    def put(
        self,
        key: str,
        src_path: Path,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        md5: bytes | None = None,
    ) -> None: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None: ...

    @abstractmethod
    def open(self, key: str, start: int = 0, end: int | None = None) -> Reader: ...

    @abstractmethod
    def stat(self, key: str) -> FileInfo | None: ...

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    @abstractmethod
    def delete(self, key: str) -> None: ...

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def list_prefix(self, prefix: str) -> list[str]: ...

    @abstractmethod
    def entries(self, prefix: str = "") -> list[Entry]: ...

    def close(self) -> None:
        return None


__all__ = [
    "CHUNK",
    "Entry",
    "FileInfo",
    "InvalidKey",
    "Reader",
    "Storage",
    "StorageError",
    "check_key",
    "check_prefix",
]
