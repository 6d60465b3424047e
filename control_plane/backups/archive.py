"""Snapshot archives: a consistent copy of an instance folder as one `.tar.gz` with a manifest.

The instance folder is written by its tenant, who may replace anything in it at any moment (by a
symbolic link to another tenant's database, a hard link, a FIFO, a directory swapped during the
walk), so nothing here opens a path of it: everything goes through `control_plane.safe_fs`
from a descriptor of the folder itself (`PF_DATA_DIR/instances/ID`, which only root can change).

Building (`build_archive`, blocking):
- each database is copied with SQLite's online backup API in one step, by a child process
  running as the instance's uid (`db_copy`): in WAL mode that is a single read transaction,
  so the instance keeps writing and the copy is one consistent moment of that database. A
  database (or its `-wal/-shm/-journal`) that is a link, a FIFO, someone else's file or a file
  with several hard links is refused: the snapshot fails with `FolderRefused`, saying which;
- every other entry of the instance folder (`pb_data/storage`, hooks, migrations, public
  files, ...) is archived when it is a regular file of the instance's uid with a single link,
  read through a descriptor opened without following links; anything else (a symbolic link,
  a FIFO, a device node, a hard link, a file of another uid, a directory replaced while it was
  read) is left out and listed in the manifest's `skipped`. The databases' `-wal/-shm/-journal`
  files, the instance's output log and PocketBase's own `pb_data/backups` are not archived;
- `MANIFEST.json` (the last member) lists every file with its size and SHA-256, the engine,
  its version, the time, and what was left out.

Checking (`extract_verified`, blocking): extracts into a new private folder, accepting only
regular files with plain relative names (no absolute paths, no `..`, no links, no devices), each
created new below descriptors (`O_EXCL|O_NOFOLLOW`), then requires exactly the manifest's files
with their sizes and SHA-256, and `PRAGMA integrity_check` = ok for every database. Anything
else raises `ArchiveError` with the reason. The caller gives the checked folder to the
instance's uid (`safe_fs.hand_over`) before it becomes the instance folder.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import apsw

from control_plane import safe_fs
from control_plane.backups.db_copy import SIDE_FILES, DatabaseCopyError, copy_databases

MANIFEST = "MANIFEST.json"
FORMAT = 1
_CHUNK = 1 << 20
_MANIFEST_MAX_BYTES = 64 * 1024 * 1024
SKIP_DIRS = ("pb_data/backups", "pb_data/.pb_temp_to_delete")


class ArchiveError(Exception):
    """An archive is unusable; the message says why."""


class FolderRefused(ArchiveError):
    """The instance folder holds, where a database must be, something the control plane does
    not touch (a link, a FIFO, someone else's file); the message says what and where."""


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
    skipped: dict[str, str] = field(default_factory=dict)  # left out: path -> why

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT,
            "instance": {"id": self.instance_id, "name": self.instance_name},
            "engine": {"name": self.engine, "version": self.version},
            "created": self.created,
            "databases": self.databases,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "skipped": [{"path": p, "reason": r} for p, r in sorted(self.skipped.items())],
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
                skipped={str(s["path"]): str(s["reason"]) for s in body.get("skipped", [])},
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


def integrity_problem(path: Path) -> str | None:
    """None when `PRAGMA integrity_check` says ok, else what it says (first 5 lines). For
    files in the control plane's own scratch space only (never an instance folder)."""
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


def not_archived(rel: str, databases: list[str], log_name: str) -> bool:
    """Whether `rel` stays out of archives (and carry-overs) by rule: a database or one of
    its side files, the output log (and its rotations), PocketBase's own backups."""
    if rel == log_name or rel.startswith(log_name + "."):
        return True
    if rel in databases or any(rel == d or rel.startswith(d + "/") for d in SKIP_DIRS):
        return True
    return any(rel.startswith(db) and rel[len(db) :] in SIDE_FILES for db in databases)


def fingerprint(root: Path, log_name: str) -> str:
    """A cheap digest of the folder's state (every entry's path, type, size and mtime, the
    databases' WAL included; links are not followed): equal fingerprints mean nothing was
    written in between."""
    digest = hashlib.sha256()
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return digest.hexdigest()
    try:
        for entry in safe_fs.walk(root_fd, prune=lambda rel: not_archived(rel, [], log_name)):
            if entry.is_dir or not_archived(entry.rel, [], log_name):
                continue
            info = entry.info
            line = f"{entry.rel}\0{info.st_mode}\0{info.st_size}\0{info.st_mtime_ns}\n"
            digest.update(line.encode())
    finally:
        os.close(root_fd)
    return digest.hexdigest()


def _add_fd(tar: tarfile.TarFile, fd: int, arcname: str) -> FileEntry:
    """Archive the regular file open as `fd` (closed here) as `arcname`."""
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        member = tarfile.TarInfo(arcname)
        member.size = info.st_size
        member.mtime = int(info.st_mtime)
        member.mode = 0o600
        reader = _HashingReader(handle, info.st_size)
        tar.addfile(member, reader)  # raises OSError if the file shrank meanwhile
        return FileEntry(arcname, info.st_size, reader.digest.hexdigest())


def _copy_databases(
    root_fd: int, db_rel: list[str], work: Path, uid: int | None
) -> list[tuple[str, str]]:
    """(copy name, rel) of each database present, copied into `work/db` (see `db_copy`)."""
    try:
        results = copy_databases(root_fd, db_rel, work / "db", uid)
    except DatabaseCopyError as err:
        raise ArchiveError(str(err)) from err
    copies: list[tuple[str, str]] = []
    for result in results:
        if result.status == "refused":
            raise FolderRefused(
                f"{result.reason}; the control plane does not follow links nor read files "
                "that are not the instance's own in an instance folder"
            )
        if result.status == "corrupt":  # never archive, let alone call good, a damaged copy
            raise ArchiveError(
                f"the copy of {result.rel} fails its integrity check: {result.reason}"
            )
        if result.status == "error":
            raise ArchiveError(f"copying {result.rel} failed: {result.reason}")
        if result.status == "copied":
            copies.append((result.copy, result.rel))
    return copies


def build_archive(
    root: Path,
    databases: list[Path],
    log_file: Path,
    work: Path,
    dest: Path,
    manifest: Manifest,
    uid: int | None,
) -> tuple[int, str]:
    """Write the archive of the instance folder `root` to `dest`; return its size and SHA-256.

    `databases` are absolute paths inside `root` (missing ones are skipped); each copy must
    pass `PRAGMA integrity_check` before it is packed. `work` is a private scratch folder
    (emptied by the caller). `uid` is the instance's uid, None when the instance runs as the
    control plane's own user: the databases are copied as `uid`, and only files of `uid`
    (else ours) are archived. Raises `FolderRefused` for a database that is not the
    instance's own regular file, `ArchiveError` when a copy fails.
    """
    owner = uid if uid is not None else os.geteuid()
    db_rel = [db.relative_to(root).as_posix() for db in databases]
    log_name = log_file.relative_to(root).as_posix()
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:  # never started: an empty folder
        (work / "empty").mkdir(mode=0o700)
        root_fd = safe_fs.open_anchor(work / "empty")
    try:
        copies = _copy_databases(root_fd, db_rel, work, uid)
        manifest.databases = [rel for _, rel in copies]
        copies_fd = safe_fs.open_anchor(work / "db")
        try:
            return _pack(root_fd, copies_fd, copies, db_rel, log_name, owner, dest, manifest)
        finally:
            os.close(copies_fd)
    finally:
        os.close(root_fd)


def _pack(
    root_fd: int,
    copies_fd: int,
    copies: list[tuple[str, str]],
    db_rel: list[str],
    log_name: str,
    owner: int,
    dest: Path,
    manifest: Manifest,
) -> tuple[int, str]:
    skipped = safe_fs.Skipped()
    with dest.open("wb") as raw:
        writer = _HashingWriter(raw)
        with (
            gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=1, mtime=0) as packed,
            tarfile.open(fileobj=packed, mode="w|") as tar,
        ):
            for copy, rel in copies:  # written by the child as the instance's uid
                manifest.files.append(
                    _add_fd(tar, safe_fs.open_own_file(copies_fd, copy, owner), rel)
                )
            entries = safe_fs.walk(
                root_fd, prune=lambda rel: not_archived(rel, db_rel, log_name), skipped=skipped
            )
            for entry in entries:
                if entry.is_dir or not_archived(entry.rel, db_rel, log_name):
                    continue
                try:
                    fd = safe_fs.open_own_file(entry.dir_fd, entry.name, owner, shown_as=entry.rel)
                except FileNotFoundError:
                    continue  # deleted while we walked: not part of this moment
                except safe_fs.Refused as err:
                    skipped.add(entry.rel, err.reason)
                    continue
                manifest.files.append(_add_fd(tar, fd, entry.rel))
            manifest.skipped = dict(skipped.entries)
            body = manifest.to_json()
            member = tarfile.TarInfo(MANIFEST)
            member.size = len(body)
            member.mtime = int(datetime.now(UTC).timestamp())
            tar.addfile(member, io.BytesIO(body))
        raw.flush()
        os.fsync(raw.fileno())
    return writer.size, writer.digest.hexdigest()


def extract_verified(archive: Path, dest: Path) -> Manifest:
    """Extract `archive` into the new folder `dest` and check it completely (see the module
    docstring). Raises `ArchiveError`; `dest` may then hold a partial extraction."""
    dest.mkdir(mode=0o700)
    dest_fd = safe_fs.open_anchor(dest)
    try:
        body, present = _extract(archive, dest_fd)
    finally:
        os.close(dest_fd)
    if body is None:
        raise ArchiveError("the archive has no manifest")
    manifest = Manifest.from_json(body)
    listed = {entry.path: entry for entry in manifest.files}
    extra = sorted(set(present) - set(listed))
    if extra:
        raise ArchiveError(f"files not in the manifest: {', '.join(extra[:5])}")
    for rel, entry in sorted(listed.items()):
        if rel not in present:
            raise ArchiveError(f"{rel} is missing from the archive")
        if present[rel] != (entry.size, entry.sha256):
            raise ArchiveError(f"{rel} does not match its checksum in the manifest")
    for rel in manifest.databases:
        if rel not in listed:
            raise ArchiveError(f"database {rel} is not in the archive")
        problem = integrity_problem(dest / rel)
        if problem is not None:
            raise ArchiveError(f"database {rel} fails its integrity check: {problem}")
    return manifest


def _extract(archive: Path, dest_fd: int) -> tuple[bytes | None, dict[str, tuple[int, str]]]:
    """Write the archive's regular files below `dest_fd`; return the manifest's bytes and,
    per file, its size and SHA-256 as extracted."""
    manifest: bytes | None = None
    present: dict[str, tuple[int, str]] = {}
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            for member in tar:
                if member.name == MANIFEST and member.isreg():
                    if member.size > _MANIFEST_MAX_BYTES:
                        raise ArchiveError("the manifest is too large")
                    source = tar.extractfile(member)
                    manifest = source.read() if source is not None else b""
                    continue
                if member.isdir():
                    continue  # folders come with their files
                if not member.isreg():
                    raise ArchiveError(f"{member.name} is not a regular file")
                source = tar.extractfile(member)
                if source is None or member.name in present:
                    raise ArchiveError(f"{member.name} cannot be extracted")
                present[member.name] = _write_member(dest_fd, member, source)
    except safe_fs.Refused as err:
        raise ArchiveError(f"the archive holds an unsafe name: {err}") from err
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        raise ArchiveError(f"the archive cannot be read: {err}") from err
    return manifest, present


def _write_member(dest_fd: int, member: tarfile.TarInfo, source: IO[bytes]) -> tuple[int, str]:
    parts = safe_fs.components(member.name)
    folder = "/".join(parts[:-1])
    parent = safe_fs.make_dirs(dest_fd, folder) if folder else os.dup(dest_fd)
    try:
        fd = safe_fs.create_file(parent, parts[-1])
    finally:
        os.close(parent)
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(fd, "wb") as target:
        while chunk := source.read(_CHUNK):
            target.write(chunk)
            digest.update(chunk)
            size += len(chunk)
        target.flush()
        with contextlib.suppress(OSError):
            os.utime(target.fileno(), (member.mtime, member.mtime))
    return size, digest.hexdigest()
