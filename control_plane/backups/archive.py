"""Snapshot archives: a consistent copy of an instance folder as one `.tar.gz` with a manifest.

Building (`build_archive`, blocking):
- each database is copied with SQLite's online backup API in one step: in WAL mode that is a
  single read transaction, so the instance keeps writing (readers never block writers) and
  the copy is one consistent moment of that database;
- every other regular file of the instance folder (`pb_data/storage`, hooks, migrations,
  public files, ...) is copied as it is, except the databases' `-wal/-shm/-journal` files,
  the instance's output log and PocketBase's own `pb_data/backups`; symlinks and special
  files are skipped and never followed;
- `MANIFEST.json` (the last member) lists every file with its size and SHA-256, the engine,
  its version and the time.

Checking (`extract_verified`, blocking): extracts into a new folder with tarfile's `data`
filter (no absolute paths, no `..`, no links out, no devices), then requires exactly the
manifest's files with their sizes and SHA-256, and `PRAGMA integrity_check` = ok for every
database. Anything else raises `ArchiveError` with the reason.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import apsw

MANIFEST = "MANIFEST.json"
FORMAT = 1
_CHUNK = 1 << 20
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal")
_SKIP_DIRS = ("pb_data/backups", "pb_data/.pb_temp_to_delete")


class ArchiveError(Exception):
    """An archive is unusable; the message says why."""


@dataclass
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    instance_id: str
    instance_name: str
    engine: str
    version: str
    created: str
    databases: list[str]
    files: list[FileEntry] = field(default_factory=list)

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "instance": {"id": self.instance_id, "name": self.instance_name},
            "engine": {"name": self.engine, "version": self.version},
            "created": self.created,
            "databases": self.databases,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
        }
        return json.dumps(body, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        try:
            body = json.loads(data)
            return cls(
                instance_id=body["instance"]["id"],
                instance_name=body["instance"]["name"],
                engine=body["engine"]["name"],
                version=body["engine"]["version"],
                created=body["created"],
                databases=[str(p) for p in body["databases"]],
                files=[
                    FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"]))
                    for f in body["files"]
                ],
            )
        except (ValueError, KeyError, TypeError) as err:
            raise ArchiveError(f"the manifest is unreadable: {err}") from err


class _HashingWriter(io.RawIOBase):
    """A write-only file that hashes and counts what goes through it."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target = target
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.target.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


class _HashingReader(io.RawIOBase):
    """Reads at most `limit` bytes of `source`, hashing them."""

    def __init__(self, source: IO[bytes], limit: int) -> None:
        self.source = source
        self.left = limit
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.left:
            size = self.left
        data = self.source.read(size)
        self.left -= len(data)
        self.digest.update(data)
        return data


def copy_database(source: Path, dest: Path) -> None:
    """A consistent copy of the SQLite database `source` at `dest`, taken while it is in use.

    One `sqlite3_backup_step(-1)`: a single read transaction (in WAL mode writers go on).
    Opened read-write only so that SQLite may create a missing `-shm` (which it gives the
    database's owner when we are root); nothing is written to `source`.

    Through apsw, whose SQLite is current: instance databases are shared with the engine and
    Litestream, and SQLite before 3.51.3 can corrupt a database in WAL mode when connections
    of one process checkpoint while another writes (the "WAL-reset" bug), which Python's own
    `sqlite3` module may still be built with.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = apsw.Connection(str(source), flags=apsw.SQLITE_OPEN_READWRITE)
    try:
        src.set_busy_timeout(30_000)
        dst = apsw.Connection(str(dest))
        try:
            with dst.backup("main", src, "main") as backup:
                backup.step(-1)
        finally:
            dst.close()
    finally:
        src.close()


def integrity_problem(path: Path) -> str | None:
    """None when `PRAGMA integrity_check` says ok, else what it says (first 5 lines)."""
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
        try:
            conn.set_busy_timeout(30_000)
            rows = list(conn.execute("PRAGMA integrity_check"))
        finally:
            conn.close()
    except apsw.Error as err:
        return str(err) or type(err).__name__
    result = "; ".join(str(row[0]) for row in rows[:5])
    return None if result == "ok" else result


def _skipped(rel: str, databases: Iterable[str], log_name: str) -> bool:
    if rel == log_name or rel.startswith(log_name + "."):
        return True
    if any(rel == d or rel.startswith(d + "/") for d in _SKIP_DIRS):
        return True
    return any(rel.startswith(db) and rel[len(db) :] in _SKIP_SUFFIXES for db in databases)


def regular_files(root: Path, databases: list[str], log_name: str) -> list[str]:
    """Relative paths of the regular files to archive (databases excluded), sorted."""
    found: list[str] = []
    for parent, dirs, files in os.walk(root, followlinks=False):
        rel_parent = Path(parent).relative_to(root).as_posix()
        prefix = "" if rel_parent == "." else rel_parent + "/"
        dirs[:] = [d for d in dirs if not _skipped(prefix + d, databases, log_name)]
        for name in files:
            rel = prefix + name
            if rel in databases or _skipped(rel, databases, log_name):
                continue
            with contextlib.suppress(OSError):
                if stat.S_ISREG(os.lstat(os.path.join(parent, name)).st_mode):
                    found.append(rel)
    return sorted(found)


def fingerprint(root: Path, databases: list[str], log_name: str) -> str:
    """A cheap digest of the folder's state (paths, sizes, mtimes, and the databases' WAL):
    equal fingerprints mean nothing was written in between."""
    digest = hashlib.sha256()
    names = regular_files(root, [], log_name)  # databases and their WAL files included
    for rel in names:
        with contextlib.suppress(OSError):
            info = os.lstat(root / rel)
            digest.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str) -> FileEntry:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ArchiveError(f"{arcname} is not a regular file")
        member = tarfile.TarInfo(arcname)
        member.size = info.st_size
        member.mtime = int(info.st_mtime)
        member.mode = 0o600
        reader = _HashingReader(handle, info.st_size)
        tar.addfile(member, reader)  # raises OSError if the file shrank meanwhile
        return FileEntry(arcname, info.st_size, reader.digest.hexdigest())


def build_archive(
    root: Path,
    databases: list[Path],
    log_file: Path,
    work: Path,
    dest: Path,
    manifest: Manifest,
) -> tuple[int, str]:
    """Write the archive of the instance folder `root` to `dest`; return its size and SHA-256.

    `databases` are absolute paths inside `root` (missing ones are skipped); each copy must
    pass `PRAGMA integrity_check` before it is packed. `work` is a scratch folder for the
    database copies (emptied by the caller).
    """
    db_rel = [db.relative_to(root).as_posix() for db in databases]
    present = [rel for rel, db in zip(db_rel, databases, strict=True) if db.is_file()]
    manifest.databases = present
    log_name = log_file.relative_to(root).as_posix()
    copies: list[tuple[Path, str]] = []
    for rel in present:
        copy = work / "db" / rel
        copy_database(root / rel, copy)
        problem = integrity_problem(copy)
        if problem is not None:  # never archive, let alone call good, a damaged copy
            raise ArchiveError(f"the copy of {rel} fails its integrity check: {problem}")
        copies.append((copy, rel))
    with dest.open("wb") as raw:
        writer = _HashingWriter(raw)
        with (
            gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=1, mtime=0) as packed,
            tarfile.open(fileobj=packed, mode="w|") as tar,
        ):
            for copy, rel in copies:
                manifest.files.append(_add_file(tar, copy, rel))
            for rel in regular_files(root, db_rel, log_name):
                try:
                    manifest.files.append(_add_file(tar, root / rel, rel))
                except FileNotFoundError:
                    continue  # deleted while we walked: not part of this moment
            body = manifest.to_json()
            member = tarfile.TarInfo(MANIFEST)
            member.size = len(body)
            member.mtime = int(datetime.now(UTC).timestamp())
            tar.addfile(member, io.BytesIO(body))
        raw.flush()
        os.fsync(raw.fileno())
    return writer.size, writer.digest.hexdigest()


def _hash(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def extract_verified(archive: Path, dest: Path) -> Manifest:
    """Extract `archive` into the new folder `dest` and check it completely (see the module
    docstring). Raises `ArchiveError`; `dest` may then hold a partial extraction."""
    dest.mkdir(mode=0o700)
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise ArchiveError(f"the archive cannot be read: {err}") from err
    manifest_path = dest / MANIFEST
    if not manifest_path.is_file():
        raise ArchiveError("the archive has no manifest")
    manifest = Manifest.from_json(manifest_path.read_bytes())
    manifest_path.unlink()
    listed = {entry.path: entry for entry in manifest.files}
    present = set(regular_files(dest, [], "\0"))
    extra = sorted(present - set(listed))
    if extra:
        raise ArchiveError(f"files not in the manifest: {', '.join(extra[:5])}")
    for rel, entry in sorted(listed.items()):
        path = dest / rel
        if rel not in present:
            raise ArchiveError(f"{rel} is missing from the archive")
        size, digest = _hash(path)
        if size != entry.size or digest != entry.sha256:
            raise ArchiveError(f"{rel} does not match its checksum in the manifest")
    for rel in manifest.databases:
        if rel not in listed:
            raise ArchiveError(f"database {rel} is not in the archive")
        problem = integrity_problem(dest / rel)
        if problem is not None:
            raise ArchiveError(f"database {rel} fails its integrity check: {problem}")
    return manifest
