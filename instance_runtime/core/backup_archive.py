"""The backup archive: a zip of the data folder as PocketBase makes it, and its checked
extraction (PocketBase's `core/backup_create.go`, `core/backup_restore.go`, `tools/archive`).

Contract (blocking functions: run them in a thread):

- `write_archive(app, zip_path, hold_removals)` writes the zip: `data.db` first, then
  `auxiliary.db`, each a consistent snapshot taken with `VACUUM INTO` (one read transaction on
  a connection of its own, into `TEMP_DIR`: the app's writer goes on meanwhile), then every
  other regular file of the data folder under its relative path (`storage/...`, ...), deflated
  at the fastest level (as PocketBase; a file whose first 64 KiB do not shrink, an image or an
  archive, is stored as it is instead, which saves the CPU), streamed (nothing is held in
  memory but a chunk). Left out, as
  PocketBase: the root entries `ARCHIVE_EXCLUDE` (`backups`, its temp, notify, autocert and
  `lost+found` folders, plus our upload staging), the databases' `-wal`/`-shm` files, symlinks
  and anything that is not a regular file. `hold_removals` is entered from before the
  `data.db` snapshot until the walk is done, so files that a concurrent commit removes after
  the snapshot are still copied (see `core.file_storage.FileStorage.removals_held`). After the
  snapshots the WALs are checkpointed (TRUNCATE), unless checkpoints are left to Litestream.
- `extract_checked(zip_path, dest)` refuses an archive that is not a zip (`"zip: not a valid
  zip file"`), that has a member whose path leaves `dest` (absolute, `..`, a drive or
  backslash trick: `"invalid file path: ..."`; nothing is extracted then), that would not fit
  on the disk, or that holds no `data.db` that SQLite opens and finds sound (`PRAGMA
  integrity_check`; the same for an `auxiliary.db` it holds): `ArchiveError` with the reason,
  worded as PocketBase's where it has one (`"data.db file is missing or invalid: ..."`).
  Directories and regular files are extracted (modes kept, at most 0o777); symlinks and other
  special members are skipped, as PocketBase does.
- `move_content(src, dest, exclude)` moves every root entry of `src` but `exclude` into
  `dest` (created if missing) by renames; on a failure the entries moved so far go back
  (PocketBase's `osutils.MoveDirContent`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import stat
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from instance_runtime.core.app import App

log = logging.getLogger("instance_runtime")

DATA_DB = "data.db"
AUX_DB = "auxiliary.db"
BACKUPS_DIR = "backups"
TEMP_DIR = ".pb_temp_to_delete"  # PocketBase's: emptied at every start
NOTIFY_DIR = ".notify"
AUTOCERT_DIR = ".autocert_cache"
LOST_FOUND_DIR = "lost+found"
OUR_STAGING = (".pf_uploads", ".pf_uploads.lock")  # core.files / core.staging_sweep
ARCHIVE_EXCLUDE = frozenset(
    {BACKUPS_DIR, TEMP_DIR, NOTIFY_DIR, AUTOCERT_DIR, LOST_FOUND_DIR, *OUR_STAGING}
)
RESTORE_EXCLUDE = frozenset({BACKUPS_DIR, TEMP_DIR, AUTOCERT_DIR, LOST_FOUND_DIR, *OUR_STAGING})
_DB_FILES = frozenset(db + suffix for db in (DATA_DB, AUX_DB) for suffix in ("", "-wal", "-shm"))
_CHUNK = 1 << 20
_FREE_MARGIN = 16 << 20
_PROBE = 1 << 16


class ArchiveError(Exception):
    """Why an archive cannot be restored (PocketBase's wording where it has one)."""


def _read_only(path: Path) -> str:
    return path.resolve().as_uri() + "?mode=ro"


def _snapshot(db_path: Path, dest: Path) -> None:
    """`VACUUM INTO dest` on a connection of its own (a read transaction: writers go on)."""
    dest.unlink(missing_ok=True)
    conn = sqlite3.connect(_read_only(db_path), uri=True, timeout=30.0)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("VACUUM INTO ?", (str(dest),))
    finally:
        conn.close()


def _checkpoint(db_path: Path) -> None:
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(
            sqlite3.connect(str(db_path), timeout=10.0, isolation_level=None)
        ) as conn,
    ):
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _compressible(path: Path) -> bool:
    """Whether deflating the file is worth it: its first `_PROBE` bytes shrink by 3% at least
    (images, videos and archives in `storage/` do not, and would only cost CPU)."""
    with open(path, "rb") as src:
        head = src.read(_PROBE)
    return len(zlib.compress(head, 1)) < len(head) * 0.97


def _add_file(archive: zipfile.ZipFile, path: Path, name: str, *, probe: bool = False) -> None:
    info = zipfile.ZipInfo.from_file(path, name, strict_timestamps=False)
    deflate = not probe or _compressible(path)
    info.compress_type = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with open(path, "rb") as src, archive.open(info, "w", force_zip64=True) as out:
        shutil.copyfileobj(src, out, _CHUNK)


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """The regular files under `root` but the excluded root entries, as (path, zip name)."""
    for dirpath, dirs, names in os.walk(root):
        here = Path(dirpath)
        top = here == root
        keep = []
        for d in sorted(dirs):
            if top and d in ARCHIVE_EXCLUDE:
                continue
            if not (here / d).is_symlink():
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            if top and (name in ARCHIVE_EXCLUDE or name in _DB_FILES):
                continue
            path = here / name
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            if stat.S_ISREG(mode):
                yield path, path.relative_to(root).as_posix()


def write_archive(app: App, zip_path: Path, hold_removals: AbstractContextManager[object]) -> None:
    """See the module docstring."""
    data_dir = app.data_dir
    temp = data_dir / TEMP_DIR
    temp.mkdir(parents=True, exist_ok=True)
    snapshot = temp / f"{zip_path.name}.db"
    zipped = zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED, compresslevel=1)
    with zipped as archive, hold_removals:
        try:
            _snapshot(app.db.path, snapshot)
            _add_file(archive, snapshot, DATA_DB)
            app.request_log.flush()  # what was logged up to now is in the snapshot
            aux = data_dir / AUX_DB
            if aux.exists():
                _snapshot(aux, snapshot)
                _add_file(archive, snapshot, AUX_DB)
        finally:
            snapshot.unlink(missing_ok=True)
        if app.db.autocheckpoint:  # as PocketBase, unless Litestream checkpoints
            for db in (app.db.path, data_dir / AUX_DB):
                if db.exists():
                    _checkpoint(db)
        for path, name in _walk(data_dir):
            try:
                _add_file(archive, path, name, probe=True)
            except FileNotFoundError:  # removed meanwhile (e.g. a thumbnail replaced)
                log.debug("backup: %s went away while it was archived", name)


def _unsafe(name: str, dest: str) -> str | None:
    """The path a member would be written to when it leaves `dest`, else None."""
    target = os.path.normpath(os.path.join(dest, name))
    if "\x00" in name or not (target + os.sep).startswith(dest):
        return target
    return None


def _member_mode(member: zipfile.ZipInfo) -> int:
    return (member.external_attr >> 16) & 0xFFFF


def _check_database(path: Path, name: str) -> None:
    try:
        conn = sqlite3.connect(_read_only(path), uri=True)
    except sqlite3.Error as exc:
        raise ArchiveError(f"{name} file is missing or invalid: {exc}") from exc
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
    except sqlite3.Error as exc:
        raise ArchiveError(f"{name} file is missing or invalid: {exc}") from exc
    finally:
        conn.close()
    if [tuple(r) for r in rows] != [("ok",)]:
        found = "; ".join(str(r[0]) for r in rows[:5])
        raise ArchiveError(f"{name} file is missing or invalid: integrity check failed: {found}")


def extract_checked(zip_path: Path, dest: Path) -> None:
    """See the module docstring."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArchiveError("zip: not a valid zip file") from exc
    base = os.path.normpath(str(dest)) + os.sep
    with archive:
        members = archive.infolist()
        for member in members:
            target = _unsafe(member.filename, base)
            if target is not None:
                raise ArchiveError(f"invalid file path: {target}")
        dest.mkdir(parents=True, exist_ok=True)
        needed = sum(m.file_size for m in members) + _FREE_MARGIN
        if needed > shutil.disk_usage(dest).free:
            raise ArchiveError(f"not enough free disk space to extract {needed} bytes")
        for member in members:
            _extract(archive, member, base)
    db = dest / DATA_DB
    if not db.is_file():
        raise ArchiveError(
            f"{DATA_DB} file is missing or invalid: stat {db}: no such file or directory"
        )
    _check_database(db, DATA_DB)
    if (dest / AUX_DB).is_file():
        _check_database(dest / AUX_DB, AUX_DB)


def _extract(archive: zipfile.ZipFile, member: zipfile.ZipInfo, base: str) -> None:
    target = os.path.normpath(os.path.join(base, member.filename))
    mode = _member_mode(member)
    if target + os.sep == base:
        return  # the folder itself (a "." or "" member)
    if member.is_dir():
        os.makedirs(target, exist_ok=True)
        return
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return  # a symlink, fifo...: skipped, as PocketBase does (no type bits: a file)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    perm = (mode & 0o777) or 0o644
    try:
        with archive.open(member) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
        raise ArchiveError(f"zip: {member.filename}: {exc}") from exc
    os.chmod(target, perm)


def move_content(src: Path, dest: Path, exclude: Iterable[str]) -> None:
    """See the module docstring."""
    skip = frozenset(exclude)
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    moved: list[tuple[Path, Path]] = []
    try:
        for entry in sorted(os.listdir(src)):
            if entry in skip:
                continue
            old, new = src / entry, dest / entry
            os.rename(old, new)
            moved.append((old, new))
    except OSError:
        for old, new in reversed(moved):
            with contextlib.suppress(OSError):
                os.rename(new, old)
        if created:
            with contextlib.suppress(OSError):
                dest.rmdir()
        raise
