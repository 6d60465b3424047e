"""`LocalStorage`: the `Storage` contract (see the package docstring) over a folder on disk.

A key `a/b/c` is the file `ROOT/a/b/c`. Keys are checked before use, and the resolved path is
checked again to lie inside the root (a symlinked folder cannot lead out). `put` renames the
staged file (same filesystem) or copies it in chunks; `put_bytes` writes a hidden temporary
file (`.tmp_*`, never listed) next to the target and renames it, so readers never see half a
file. Last-Modified comes from the file's mtime; no content type is stored.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from instance_runtime.tools.filesystem import (
    CHUNK,
    Entry,
    FileInfo,
    InvalidKey,
    Reader,
    Storage,
    StorageError,
    check_key,
    check_prefix,
)

_TMP = ".tmp_"


class _FileReader(Reader):
    def __init__(self, fh: BinaryIO, remaining: int | None) -> None:
        self._fh = fh
        self._remaining = remaining

    def read(self, n: int = -1) -> bytes:
        if self._remaining is not None:
            n = self._remaining if n < 0 else min(n, self._remaining)
            if n <= 0:
                return b""
        data = self._fh.read(n)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()


class LocalStorage(Storage):
    """See the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        """The file that holds `key` (checked to stay under the root)."""
        path = self.root / check_key(key)
        root = os.path.realpath(self.root)
        real = os.path.realpath(path)
        if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
            raise InvalidKey(f"storage key {key!r} leaves the storage root")
        return path

    def put(
        self,
        key: str,
        src_path: Path,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        target = self.path(key)
        try:
            for attempt in range(3):
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(src_path, target)
                    return
                except FileNotFoundError:
                    # the folder was removed by a concurrent delete of its last file
                    if not Path(src_path).exists() or attempt == 2:
                        raise
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self._copy_in(Path(src_path), target)
                    Path(src_path).unlink(missing_ok=True)
                    return
        except OSError as exc:
            raise StorageError(str(exc)) from exc

    def _copy_in(self, src: Path, target: Path) -> None:
        tmp = target.with_name(_TMP + secrets.token_hex(8))
        try:
            with open(src, "rb") as fin, open(tmp, "xb") as fout:
                shutil.copyfileobj(fin, fout, CHUNK)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        target = self.path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(_TMP + secrets.token_hex(8))
            try:
                with open(tmp, "xb") as out:
                    out.write(data)
                os.replace(tmp, target)
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(str(exc)) from exc

    def open(self, key: str, start: int = 0, end: int | None = None) -> Reader:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(key)
        fh = open(path, "rb")  # noqa: SIM115 - closed by the reader
        if start:
            fh.seek(start)
        return _FileReader(fh, None if end is None else max(end - start, 0))

    def stat(self, key: str) -> FileInfo | None:
        path = self.path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return FileInfo(st.st_size, datetime.fromtimestamp(st.st_mtime, UTC))

    def delete(self, key: str) -> None:
        path = self.path(key)
        try:
            path.unlink(missing_ok=True)
        except IsADirectoryError:
            return
        except OSError as exc:
            raise StorageError(str(exc)) from exc
        if path.parent != self.root:
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only when empty

    def delete_prefix(self, prefix: str) -> None:
        folder = self.path(check_prefix(prefix))
        errors: list[str] = []

        def failed(_fn: object, failed_path: str, info: tuple[type, BaseException, object]) -> None:
            if not isinstance(info[1], FileNotFoundError):
                errors.append(f"{failed_path}: {info[1]}")

        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder, onerror=failed)
        if errors:
            raise StorageError("; ".join(errors))

    def list_prefix(self, prefix: str) -> list[str]:
        folder = self.path(check_prefix(prefix))
        if not folder.is_dir():
            return []
        keys: list[str] = []
        for dirpath, _dirs, names in os.walk(folder):
            for name in names:
                if not name.startswith(_TMP):
                    keys.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return sorted(keys)

    def entries(self, prefix: str = "") -> list[Entry]:
        """Regular files only (symlinks are neither followed nor listed)."""
        found: list[Entry] = []
        for dirpath, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
            for name in names:
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if name.startswith(_TMP) or not key.startswith(prefix):
                    continue
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue  # removed meanwhile
                if stat.S_ISREG(st.st_mode):
                    modified = datetime.fromtimestamp(st.st_mtime, UTC)
                    found.append(Entry(key, FileInfo(st.st_size, modified)))
        return sorted(found, key=lambda entry: entry.key)
