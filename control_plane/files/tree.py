"""The code folders of one instance as the control plane touches them: `InstanceFiles`.

An instance's folder (`PF_DATA_DIR/instances/ID`) belongs to its uid, whose code may change
any entry at any moment; everything here works as `control_plane.safe_fs` does (see its
docstring): the root is the only path opened as a path (`safe_fs.open_anchor`), every other
component is opened relative to its parent's descriptor with `O_NOFOLLOW`, so a symbolic link
on the way is refused by the kernel at the moment it is met. On top of that:

- **Paths** are checked as text first (`control_plane.files.rules`): relative, in `pb_hooks/`,
  `pb_migrations/` or `pb_public/`, no `..`, sane lengths.
- **Only folders and the instance's own regular files** are touched: a symbolic link, FIFO,
  socket or device node, a file of another owner or with several hard links is refused
  (`LinkOrSpecial`) whether it is on the way or at the end, and left out of listings. The one
  exception is `delete`, which removes a link or special file itself (`unlinkat` never
  follows anything), alone or inside a folder deleted with `recursive`.
- **Writes are atomic**: an `Upload` is a temporary file `.pf-upload-XXXXXXXXXXXXXXXX`
  (`O_EXCL|O_NOFOLLOW`, 0600, given to the uid with `fchown`) beside its target, renamed over
  it by `commit` after an `fsync`; readers see the old file or the new one, never a part.
  Files end 0644 and new folders 0755 (a code folder itself 0700, as the driver makes it),
  all owned by the instance's uid (`fchown` on the descriptor, never by path).
- **Limits** (`FileLimits`): each file at most `max_file_bytes` (`TooLarge`, checked as the
  upload grows); creating an entry while the three folders hold `max_files` entries, or
  growing the instance by more than `quota_bytes` (less what this object has already added,
  `bytes_added`), is `OverQuota`; so is a full disk.

Pure Python and blocking (callers run it in a thread); it imports nothing of HTTP. Linux only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal, cast

from control_plane import safe_fs
from control_plane.files.errors import (
    Exists,
    FileRefused,
    LinkOrSpecial,
    NotADir,
    NotAFile,
    NotEmpty,
    NotThere,
    OverQuota,
    PathRefused,
    TooLarge,
)
from control_plane.files.rules import (
    CODE_FOLDERS,
    MAX_NAME_LENGTH,
    MAX_PATH_LENGTH,
    UPLOAD_PREFIX,
    name_problem,
    split_path,
)
from control_plane.limits import human_bytes

__all__ = [
    "CODE_FOLDERS",
    "Exists",
    "FileEntry",
    "FileLimits",
    "FileRefused",
    "InstanceFiles",
    "LinkOrSpecial",
    "NotADir",
    "NotAFile",
    "NotEmpty",
    "NotThere",
    "OverQuota",
    "PathRefused",
    "TooLarge",
    "Upload",
    "entry_of",
]

FILE_MODE = 0o644
DIR_MODE = 0o755
CODE_FOLDER_MODE = 0o700
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class FileLimits:
    max_file_bytes: int  # one file
    max_files: int  # files + folders in the three folders together
    max_path_length: int = MAX_PATH_LENGTH  # characters of a relative path
    max_name_length: int = MAX_NAME_LENGTH  # characters of one component (<= 255 bytes UTF-8)
    quota_bytes: int | None = None  # what the instance may still add; None: no quota


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the instance root, "pb_hooks/main.pb.js"
    kind: Literal["file", "dir"]
    size: int  # bytes of a file; 0 for a folder
    modified: datetime  # UTC

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def entry_of(rel: str, info: os.stat_result) -> FileEntry:
    """The entry of `rel` whose `lstat` (or `fstat`) is `info`."""
    is_dir = stat.S_ISDIR(info.st_mode)
    return FileEntry(
        path=rel,
        kind="dir" if is_dir else "file",
        size=0 if is_dir else info.st_size,
        modified=datetime.fromtimestamp(info.st_mtime, UTC),
    )


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _not_a_dir(dir_fd: int, name: str, shown: str) -> FileRefused:
    """Why `name` in `dir_fd` could not be opened as a folder (ELOOP or ENOTDIR)."""
    info = _lstat(dir_fd, name)
    if info is None or stat.S_ISREG(info.st_mode):
        return NotADir(f"{shown} is a file, not a folder")
    return LinkOrSpecial(f"{shown} is {safe_fs.kind_of(info.st_mode)}: it is not followed")


def _open_dir_in(dir_fd: int, name: str, shown: str) -> int:
    """The folder `name` of `dir_fd`, opened without following a link."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        raise NotThere(f"{shown} does not exist") from None
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise _not_a_dir(dir_fd, name, shown) from None
        raise


def _own_file_problem(info: os.stat_result, uid: int, shown: str) -> FileRefused | None:
    if stat.S_ISDIR(info.st_mode):
        return NotAFile(f"{shown} is a folder")
    problem = safe_fs.not_own_file(info, uid)
    if problem is None:
        return None
    return LinkOrSpecial(f"{shown} is {problem}: the files API leaves it alone")


@contextlib.contextmanager
def _disk_errors() -> Iterator[None]:
    """A full disk (or a filesystem quota) as `OverQuota`."""
    try:
        yield
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OverQuota("the disk is full") from None
        raise


class InstanceFiles:
    """The three code folders below `root` (an instance's folder, a path only the control
    plane can change), acting for `uid` within `limits`. One object may serve many
    operations (an SFTP session): `bytes_added` is what its commits added to the instance,
    less what its deletes and replacements freed, and counts against `limits.quota_bytes`.
    Safe to use from several threads."""

    def __init__(self, root: Path, uid: int, limits: FileLimits) -> None:
        self.root = root
        self.uid = uid
        self.limits = limits
        self.bytes_added = 0
        self._recorded = 0
        self._lock = threading.Lock()

    # ----- reading

    def list(self, rel: str) -> list[FileEntry]:
        """The folders and regular files in the folder `rel`, by name; `""` lists the code
        folders present. Links, special files, our temporary files and names the path rules
        refuse are left out."""
        parts = self._parts(rel, allow_root=True)
        with self._anchor() as root_fd:
            if not parts:
                present = ((name, _lstat(root_fd, name)) for name in CODE_FOLDERS)
                return [
                    entry_of(name, info)
                    for name, info in present
                    if info is not None and stat.S_ISDIR(info.st_mode)
                ]
            fd = self._open_dirs(root_fd, parts)
        try:
            return _listing(fd, "/".join(parts), self.limits)
        finally:
            os.close(fd)

    def stat(self, rel: str) -> FileEntry:
        """The folder or own regular file `rel`."""
        parts = self._parts(rel)
        shown = "/".join(parts)
        with self._anchor() as root_fd:
            parent = self._open_dirs(root_fd, parts[:-1])
        try:
            info = _lstat(parent, parts[-1])
        finally:
            os.close(parent)
        if info is None:
            raise NotThere(f"{shown} does not exist")
        problem = None if stat.S_ISDIR(info.st_mode) else _own_file_problem(info, self.uid, shown)
        if problem is not None:
            raise problem
        return entry_of(shown, info)

    def open_read(self, rel: str) -> BinaryIO:
        """The regular file `rel` (the uid's, one link), open for reading; the caller closes
        it. Nothing else is ever opened: no FIFO blocks, no device is touched."""
        parts = self._parts(rel)
        shown = "/".join(parts)
        with self._anchor() as root_fd:
            parent = self._open_dirs(root_fd, parts[:-1])
        try:
            fd = safe_fs.open_own_file(parent, parts[-1], self.uid, shown_as=shown)
        except FileNotFoundError:
            raise NotThere(f"{shown} does not exist") from None
        except safe_fs.Refused:
            info = _lstat(parent, parts[-1])
            if info is None:
                raise NotThere(f"{shown} does not exist") from None
            raise _own_file_problem(info, self.uid, shown) or NotThere(shown) from None
        finally:
            os.close(parent)
        return open(fd, "rb")  # the caller's to close

    def count(self) -> int:
        """Entries (files, folders, anything) in the three code folders together."""
        with self._anchor() as root_fd:
            return self._count(root_fd, self.limits.max_files)

    # ----- writing

    def open_upload(self, rel: str) -> Upload:
        """An upload of the file `rel`, new or replacing the own file there; missing folders
        on the way are created now. Refused when a folder is there, or a link or special
        file, and when the new entries would pass `max_files`."""
        parts = self._parts(rel)
        shown = "/".join(parts)
        if len(parts) < 2:
            raise NotAFile(f"{shown} is a code folder, not a file")
        with self._anchor() as root_fd, _disk_errors():
            missing = self._missing(root_fd, parts)
            self._check_count(root_fd, missing)
            parent = self._make_dirs(root_fd, parts[:-1])
        try:
            replaced = self._replaceable(parent, parts[-1], shown)
            temp = UPLOAD_PREFIX + secrets.token_hex(8)
            with _disk_errors():
                fd = safe_fs.create_file(parent, temp, uid=self.uid, mode=0o600)
        except BaseException:
            os.close(parent)
            raise
        return Upload(self, parent, parts[-1], shown, fd, temp, replaced)

    def write(self, rel: str, data: bytes) -> FileEntry:
        """`open_upload`, one write, `commit`."""
        with self.open_upload(rel) as upload:
            if data:
                upload.write_at(0, data)
            return upload.commit()

    def mkdir(self, rel: str) -> FileEntry:
        """Create the folder `rel` and the missing ones on the way; `Exists` when something
        is there already."""
        parts = self._parts(rel)
        shown = "/".join(parts)
        with self._anchor() as root_fd, _disk_errors():
            missing = self._missing(root_fd, parts[:-1])
            if missing == 0:
                parent = self._open_dirs(root_fd, parts[:-1])
                try:
                    if _lstat(parent, parts[-1]) is not None:
                        raise Exists(f"{shown} already exists")
                finally:
                    os.close(parent)
            self._check_count(root_fd, missing + 1)
            fd = self._make_dirs(root_fd, parts)
        try:
            return entry_of(shown, os.fstat(fd))
        finally:
            os.close(fd)

    def delete(self, rel: str, *, recursive: bool = False) -> None:
        """Remove the file, or the folder (empty unless `recursive`), `rel`; never a code
        folder itself. A link or special file is removed itself, never followed."""
        parts = self._parts(rel)
        shown = "/".join(parts)
        if len(parts) < 2:
            raise PathRefused(f"{shown} itself cannot be deleted; delete what it holds")
        with self._anchor() as root_fd:
            parent = self._open_dirs(root_fd, parts[:-1])
        try:
            info = _lstat(parent, parts[-1])
            if info is None:
                raise NotThere(f"{shown} does not exist")
            if not stat.S_ISDIR(info.st_mode):
                try:
                    os.unlink(parts[-1], dir_fd=parent)
                except FileNotFoundError:
                    raise NotThere(f"{shown} does not exist") from None
                freed = _freed_by(info)
            elif recursive:
                freed = _remove_tree(parent, parts[-1], shown)
            else:
                freed = 0
                try:
                    os.rmdir(parts[-1], dir_fd=parent)
                except OSError as err:
                    if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                    raise NotEmpty(f"{shown} is not empty; delete it with recursive") from None
            os.fsync(parent)
        finally:
            os.close(parent)
        self._account(-freed)

    def move(self, src: str, dst: str) -> FileEntry:
        """Move (rename) the file or folder `src` to `dst`, both in the code folders; a file
        replaces an own file at `dst`; nothing replaces a folder. The folder `dst` lands in
        must exist."""
        source = self._parts(src)
        target = self._parts(dst, field="to")
        src_shown, dst_shown = "/".join(source), "/".join(target)
        if len(source) < 2:
            raise PathRefused(f"{src_shown} itself cannot be moved")
        if len(target) < 2:
            raise PathRefused(f"{dst_shown} is a code folder: nothing replaces it", field="to")
        if target[: len(source)] == source:
            if target == source:
                return self.stat(src_shown)
            raise PathRefused("a folder cannot be moved into itself", field="to")
        with self._anchor() as root_fd:
            src_parent = self._open_dirs(root_fd, source[:-1])
            try:
                dst_parent = self._open_dirs(root_fd, target[:-1])
            except BaseException:
                os.close(src_parent)
                raise
        try:
            return self._move(src_parent, source[-1], src_shown, dst_parent, target[-1], dst_shown)
        finally:
            os.close(src_parent)
            os.close(dst_parent)

    def _move(
        self, src_dir: int, src_name: str, src_shown: str, dst_dir: int, dst_name: str, shown: str
    ) -> FileEntry:
        info = _lstat(src_dir, src_name)
        if info is None:
            raise NotThere(f"{src_shown} does not exist")
        moving_dir = stat.S_ISDIR(info.st_mode)
        if not moving_dir and (problem := _own_file_problem(info, self.uid, src_shown)):
            raise problem
        replaced = 0
        there = _lstat(dst_dir, dst_name)
        if there is not None:
            if stat.S_ISDIR(there.st_mode):
                raise Exists(f"{shown} is a folder: nothing replaces it", field="to")
            if moving_dir:
                raise Exists(f"{shown} is a file: a folder does not replace it", field="to")
            if problem := _own_file_problem(there, self.uid, shown):
                problem.field = "to"
                raise problem
            replaced = there.st_size
        with _disk_errors():
            os.rename(src_name, dst_name, src_dir_fd=src_dir, dst_dir_fd=dst_dir)
            os.fsync(dst_dir)
            os.fsync(src_dir)
        self._account(-replaced)
        moved = _lstat(dst_dir, dst_name)
        if moved is None:  # the instance's own code removed it at once
            raise NotThere(f"{shown} does not exist")
        return entry_of(shown, moved)

    # ----- the walk

    def normalized(self, rel: str) -> str:
        """`rel` as entries name it (`PathRefused` when the rules refuse it)."""
        return "/".join(self._parts(rel))

    def _parts(
        self, rel: str, *, allow_root: bool = False, field: str | None = None
    ) -> tuple[str, ...]:
        return split_path(
            rel,
            max_path_length=self.limits.max_path_length,
            max_name_length=self.limits.max_name_length,
            allow_root=allow_root,
            field=field,
        )

    @contextlib.contextmanager
    def _anchor(self) -> Iterator[int]:
        try:
            fd = safe_fs.open_anchor(self.root)
        except FileNotFoundError:
            raise NotThere("the instance has no folder yet: start it once") from None
        try:
            yield fd
        finally:
            os.close(fd)

    def _open_dirs(self, root_fd: int, parts: tuple[str, ...]) -> int:
        """The folder `parts` below `root_fd` (`root_fd` itself, dup'ed, for `()`)."""
        fd = os.dup(root_fd)
        try:
            for depth, part in enumerate(parts, 1):
                child = _open_dir_in(fd, part, "/".join(parts[:depth]))
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _missing(self, root_fd: int, parts: tuple[str, ...]) -> int:
        """How many components of `parts`, from the first missing one on, do not exist."""
        fd = os.dup(root_fd)
        try:
            for depth, part in enumerate(parts):
                try:
                    child = _open_dir_in(fd, part, "/".join(parts[: depth + 1]))
                except NotThere:
                    return len(parts) - depth
                except NotADir:
                    if depth == len(parts) - 1 and _lstat(fd, part) is not None:
                        return 0  # the last one is a file: the caller says what it makes of it
                    raise
                os.close(fd)
                fd = child
            return 0
        finally:
            os.close(fd)

    def _make_dirs(self, root_fd: int, parts: tuple[str, ...]) -> int:
        """Open the folder `parts`, creating the missing components (owned by the uid, mode
        0755; a code folder 0700)."""
        fd = os.dup(root_fd)
        try:
            for depth, part in enumerate(parts, 1):
                mode = CODE_FOLDER_MODE if depth == 1 else DIR_MODE
                try:
                    os.mkdir(part, mode, dir_fd=fd)
                    made = True
                except FileExistsError:
                    made = False
                child = _open_dir_in(fd, part, "/".join(parts[:depth]))
                os.close(fd)
                fd = child
                if made:
                    os.fchown(fd, self.uid, self.uid)
                    os.fchmod(fd, mode)
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _replaceable(self, parent: int, name: str, shown: str) -> int | None:
        """The size of the own file an upload would replace (None: nothing is there)."""
        info = _lstat(parent, name)
        if info is None:
            return None
        problem = _own_file_problem(info, self.uid, shown)
        if problem is not None:
            raise problem
        return info.st_size

    def _count(self, root_fd: int, stop_after: int) -> int:
        """Entries of the three folders (not our temporary files), counted up to one past
        `stop_after`."""
        total = 0
        for folder in CODE_FOLDERS:
            try:
                fd = os.open(folder, _DIR_FLAGS, dir_fd=root_fd)
            except OSError:  # missing, or not a folder: nothing the API sees
                continue
            walker = cast(Generator[safe_fs.Entry, None, None], safe_fs.walk(fd))
            try:
                for entry in walker:
                    if not entry.name.startswith(UPLOAD_PREFIX):
                        total += 1
                    if total > stop_after:
                        return total
            finally:
                walker.close()
                os.close(fd)
        return total

    def _check_count(self, root_fd: int, adding: int) -> None:
        if adding <= 0:
            return
        limit = self.limits.max_files
        if self._count(root_fd, limit) + adding > limit:
            raise OverQuota(
                f"the instance's code folders may hold {limit} files and folders together; "
                "delete some to add more"
            )

    def _check_growth(self, size: int, replaced: int | None, shown: str) -> None:
        if size > self.limits.max_file_bytes:
            largest = human_bytes(self.limits.max_file_bytes)
            raise TooLarge(f"{shown} would be larger than the {largest} a file may have")
        quota = self.limits.quota_bytes
        growth = size - (replaced or 0)
        if quota is not None and growth > 0 and growth + self.bytes_added > quota:
            left = max(0, quota - self.bytes_added)
            raise OverQuota(
                f"{shown} would take the instance over its disk quota ({human_bytes(left)} left); "
                "delete some files or ask an operator to raise the limit"
            )

    def take_unrecorded(self) -> int:
        """What `bytes_added` grew by since the last call (for the caller to add to the
        instance's measured usage once)."""
        with self._lock:
            delta, self._recorded = self.bytes_added - self._recorded, self.bytes_added
            return delta

    def _account(self, delta: int) -> None:
        with self._lock:
            self.bytes_added += delta


def _listing(fd: int, prefix: str, limits: FileLimits) -> list[FileEntry]:
    """The folders and regular files of the folder `fd` (whose path is `prefix`) by name."""
    entries: list[FileEntry] = []
    for name in sorted(os.listdir(fd)):
        rel = f"{prefix}/{name}"
        if name_problem(name, limits.max_name_length) or len(rel) > limits.max_path_length:
            continue
        info = _lstat(fd, name)
        if info is not None and (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
            entries.append(entry_of(rel, info))
    return entries


def _freed_by(info: os.stat_result) -> int:
    """Bytes a removal of `info`'s entry gives back (a file's last link only)."""
    return info.st_size if stat.S_ISREG(info.st_mode) and info.st_nlink == 1 else 0


def _remove_tree(parent: int, name: str, shown: str) -> int:
    """Remove the folder `name` of `parent` and everything in it, depth first, every folder
    opened relative to its parent without following links; bytes freed."""
    freed = 0
    stack: list[tuple[int, str]] = [(_open_dir_in(parent, name, shown), name)]
    try:
        while stack:
            fd, _ = stack[-1]
            entered = False
            for child in os.listdir(fd):
                info = _lstat(fd, child)
                if info is None:
                    continue
                if not stat.S_ISDIR(info.st_mode):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(child, dir_fd=fd)
                        freed += _freed_by(info)
                    continue
                if len(stack) >= safe_fs.MAX_DEPTH:
                    raise NotEmpty(
                        f"{shown} holds folders nested deeper than {safe_fs.MAX_DEPTH} levels; "
                        "delete the deepest ones first"
                    )
                try:
                    sub = os.open(child, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                stack.append((sub, child))
                entered = True
                break
            if entered:
                continue
            os.close(fd)
            _, done = stack.pop()
            holder = stack[-1][0] if stack else parent
            try:
                os.rmdir(done, dir_fd=holder)
            except FileNotFoundError:
                pass
            except OSError as err:
                if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
                raise NotEmpty(f"files were added to {shown} while it was deleted") from None
    finally:
        for fd, _ in stack:
            os.close(fd)
    return freed


class Upload:
    """A new version of one file, written into a temporary file beside it (see the module's
    docstring) and put in its place by `commit`. `replaced`: whether a file was there.
    Use it as a context manager (left without a commit, it aborts). Safe to use from several
    threads (one call at a time)."""

    def __init__(
        self,
        files: InstanceFiles,
        parent_fd: int,
        name: str,
        rel: str,
        fd: int,
        temp: str,
        replaced_size: int | None,
    ) -> None:
        self.files = files
        self.rel = rel
        self.name = name
        self.size = 0
        self.replaced = replaced_size is not None
        self._parent = parent_fd
        self._fd = fd
        self._temp = temp
        self._replaced_size = replaced_size
        self._done = False
        self._lock = threading.Lock()

    def __enter__(self) -> Upload:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.abort()

    def write_at(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset` (beyond the end leaves a hole); `TooLarge` or `OverQuota`
        (the upload is aborted) when the file would pass a limit."""
        if offset < 0:
            raise ValueError("a negative offset")
        with self._lock:
            self._check_open()
            size = max(self.size, offset + len(data))
            try:
                self.files._check_growth(size, self._replaced_size, self.rel)
                with _disk_errors():
                    view = memoryview(data)
                    while view:
                        written = os.pwrite(self._fd, view, offset)
                        view, offset = view[written:], offset + written
            except BaseException:
                self._abort()
                raise
            self.size = size

    def commit(self) -> FileEntry:
        """`fsync` the file, make it 0644 and rename it over its target: the new file is
        there whole, or (on a refusal, aborted) the old one still is."""
        with self._lock:
            self._check_open()
            try:
                with _disk_errors():
                    os.fchmod(self._fd, FILE_MODE)
                    os.fsync(self._fd)
                    replaced = self.files._replaceable(self._parent, self.name, self.rel)
                    try:
                        os.rename(
                            self._temp, self.name, src_dir_fd=self._parent, dst_dir_fd=self._parent
                        )
                    except IsADirectoryError:  # a folder made there meanwhile
                        raise NotAFile(f"{self.rel} is a folder") from None
                    os.fsync(self._parent)
                info = os.fstat(self._fd)
            except BaseException:
                self._abort()
                raise
            self.replaced = replaced is not None
            self.files._account(info.st_size - (replaced or 0))
            self._close()
            return entry_of(self.rel, info)

    def abort(self) -> None:
        """Remove the temporary file; nothing changes. Idempotent (and a no-op after a
        commit)."""
        with self._lock:
            self._abort()

    def _abort(self) -> None:
        if self._done:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._temp, dir_fd=self._parent)
        self._close()

    def _close(self) -> None:
        self._done = True
        os.close(self._fd)
        os.close(self._parent)

    def _check_open(self) -> None:
        if self._done:
            raise NotThere(f"the upload of {self.rel} is over")
