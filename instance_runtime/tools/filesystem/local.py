"""`LocalStorage`: the `Storage` contract (see the package docstring) over a folder on disk.

A key `a/b/c` is the file `ROOT/a/b/c`. Keys are checked before use, and the resolved path is
checked again to lie inside the root (a symlinked folder cannot lead out). `put` renames the
staged file (same filesystem) or copies it in chunks; `put_bytes` writes a hidden temporary
file (`.tmp_*`, never listed) next to the target and renames it, so readers never see half a
file. Last-Modified comes from the file's mtime.

Sidecars, as PocketBase's `fileblob` (gocloud.dev) keeps them: next to every file it stores,
`put` and `put_bytes` write `KEY.attrs` (see `sidecar.py`: the content type, the metadata such
as `original-filename`, the base64 md5 of the content), before the file itself takes its place;
`stat` reads the content type from it (None when there is no readable sidecar: a file stored
by an older version of this engine or copied in by hand, which the caller sniffs, where
PocketBase assumes `application/octet-stream`). `delete` removes the sidecar with its file (a
sidecar PocketBase wrote too), `delete_prefix` everything under the folder; listings never show
a sidecar. A key ending in `.attrs` is reserved (PocketBase's "file extension .attrs is
reserved"): `put` and `put_bytes` refuse it with `InvalidKey`, the other methods see no such
key (`stat` None, `open` `FileNotFoundError`, `delete` nothing).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
import shutil
import stat
from collections.abc import Callable, Mapping
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
    sidecar,
)
from instance_runtime.tools.filesystem.sidecar import ATTRS, is_sidecar

_TMP = ".tmp_"


def _hidden(name: str) -> bool:
    """A temporary file of a write in progress, or a sidecar: never a key of a listing."""
    return name.startswith(_TMP) or is_sidecar(name)


def _sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + ATTRS)


def _write_new(target: Path, data: bytes) -> None:
    """`data` as the file `target`, through a temporary file renamed (never half a file)."""
    tmp = target.with_name(_TMP + secrets.token_hex(8))
    try:
        with open(tmp, "xb") as out:
            out.write(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


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

    def _writable(self, key: str) -> Path:
        path = self.path(key)
        if is_sidecar(key):
            raise InvalidKey(f'storage key {key!r}: file extension "{ATTRS}" is reserved')
        return path

    def _place(
        self,
        target: Path,
        fill: Callable[[Path], None],
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        md5: bytes,
    ) -> None:
        """Writes the sidecar of `target`, then `fill(target)` puts the file in its place (a
        rename), as PocketBase's writer does; when that fails, the sidecar that was there is
        put back (or the new one removed). A folder removed meanwhile by a delete of its last
        file is made again."""
        attrs = sidecar.encode(content_type, metadata, md5)
        side = _sidecar_path(target)
        for attempt in range(3):
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                previous = side.read_bytes() if side.is_file() else None
                _write_new(side, attrs)
                try:
                    fill(target)
                except BaseException:
                    with contextlib.suppress(OSError):
                        if previous is None:
                            side.unlink(missing_ok=True)
                        else:
                            _write_new(side, previous)
                    raise
                return
            except FileNotFoundError:
                if attempt == 2 or target.parent.is_dir():
                    raise

    def put(
        self,
        key: str,
        src_path: Path,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        md5: bytes | None = None,
    ) -> None:
        target = self._writable(key)
        src = Path(src_path)
        try:
            digest = sidecar.md5_of(src) if md5 is None else md5

            def fill(path: Path) -> None:
                try:
                    os.replace(src, path)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    self._copy_in(src, path)
                    src.unlink(missing_ok=True)

            self._place(target, fill, content_type, metadata, digest)
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
        target = self._writable(key)
        digest = hashlib.md5(data, usedforsecurity=False).digest()
        try:
            self._place(target, lambda path: _write_new(path, data), content_type, None, digest)
        except OSError as exc:
            raise StorageError(str(exc)) from exc

    def open(self, key: str, start: int = 0, end: int | None = None) -> Reader:
        path = self.path(key)
        if is_sidecar(key) or not path.is_file():
            raise FileNotFoundError(key)
        fh = open(path, "rb")  # noqa: SIM115 - closed by the reader
        if start:
            fh.seek(start)
        return _FileReader(fh, None if end is None else max(end - start, 0))

    def stat(self, key: str) -> FileInfo | None:
        path = self.path(key)
        if is_sidecar(key):
            return None
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not path.is_file():
            return None
        return FileInfo(st.st_size, datetime.fromtimestamp(st.st_mtime, UTC), self._type(path))

    @staticmethod
    def _type(path: Path) -> str | None:
        """The content type in the file's sidecar (None without a readable one)."""
        try:
            with open(_sidecar_path(path), "rb") as fh:
                raw = fh.read(1 << 20)
        except OSError:
            return None
        attrs = sidecar.decode(raw)
        return (attrs.content_type or None) if attrs is not None else None

    def delete(self, key: str) -> None:
        path = self.path(key)
        if is_sidecar(key):
            return
        try:
            path.unlink(missing_ok=True)
            _sidecar_path(path).unlink(missing_ok=True)
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
            shutil.rmtree(folder, onerror=failed)  # the sidecars with their files
        if errors:
            raise StorageError("; ".join(errors))

    def list_prefix(self, prefix: str) -> list[str]:
        folder = self.path(check_prefix(prefix))
        if not folder.is_dir():
            return []
        keys: list[str] = []
        for dirpath, _dirs, names in os.walk(folder):
            for name in names:
                if not _hidden(name):
                    keys.append(Path(dirpath, name).relative_to(self.root).as_posix())
        return sorted(keys)

    def entries(self, prefix: str = "") -> list[Entry]:
        """Regular files only (symlinks are neither followed nor listed), no sidecar."""
        found: list[Entry] = []
        for dirpath, dirs, names in os.walk(self.root):
            dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(dirpath, d))]
            for name in names:
                path = Path(dirpath, name)
                key = path.relative_to(self.root).as_posix()
                if _hidden(name) or not key.startswith(prefix):
                    continue
                try:
                    st = path.lstat()
                except FileNotFoundError:
                    continue  # removed meanwhile
                if stat.S_ISREG(st.st_mode):
                    modified = datetime.fromtimestamp(st.st_mtime, UTC)
                    found.append(Entry(key, FileInfo(st.st_size, modified)))
        return sorted(found, key=lambda entry: entry.key)
