"""Touching a folder that someone else writes (a tenant's instance folder) without being fooled.

The control plane runs as root; an instance folder belongs to the instance's uid, whose code
may replace any entry at any moment: by a symbolic link (to another tenant's database, to
`/etc/shadow`), a hard link, a FIFO, a device node it found, or a directory swapped in the
middle of a walk. Every function here holds to these rules:

- paths are opened one component at a time, relative to an open directory, with `O_NOFOLLOW`
  (`O_DIRECTORY` for directories): a symbolic link on any component is refused by the kernel
  at the moment of the open, so there is no window between a check and a use. `..`, `.`,
  absolute and empty components are refused before anything is opened;
- a file to read is first opened with `O_PATH` (which opens nothing: no FIFO blocks, no device
  driver runs), checked with `fstat` (a regular file, of the expected owner, with one link:
  a hard link to someone else's file is refused), then reopened for reading through
  `/proc/self/fd`: the same inode, whatever the path has become since;
- walks (`walk`) list a directory through its descriptor, never follow links, enter a
  subdirectory only by an `O_NOFOLLOW|O_DIRECTORY` open relative to its parent and only when
  it is the inode the listing saw, on the same filesystem, at most `MAX_DEPTH` deep;
- files and folders created (`make_dirs`, `create_file`, `hand_over`) are created relative to
  descriptors with `O_EXCL|O_NOFOLLOW`, modes 0600/0700, and given to their owner with
  `fchown` on the descriptor, never by path (so is a file given back, `reclaim`).

The only paths trusted as paths are the anchors a caller opens with `open_anchor`: folders
that only the control plane can change (`PF_DATA_DIR/instances/ID`, whose parent only root
writes). Linux only (`O_PATH`, `/proc/self/fd`). This module imports nothing of pocketfleet.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

MAX_DEPTH = 64
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class Refused(OSError):
    """An entry is not what it must be (a link, not a regular file, someone else's, ...);
    `reason` says what it is, `path` where (relative to the folder given)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(errno.EPERM, f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def components(rel: str) -> list[str]:
    """The components of the relative path `rel` ('a/b/c'); `Refused` for an absolute path,
    an empty one, `.`, `..`, an empty component or a NUL byte."""
    if not rel or rel.startswith("/") or "\0" in rel:
        raise Refused(rel or "(empty)", "not a relative path")
    parts = rel.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise Refused(rel, "not a plain relative path")
    return parts


def kind_of(mode: int) -> str:
    """What an `st_mode` is, in words (for refusals and notes)."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device node"
    return "a special file"


def not_own_file(info: os.stat_result, uid: int) -> str | None:
    """Why `info` is not a regular file of `uid` with a single link (None when it is)."""
    if not stat.S_ISREG(info.st_mode):
        return f"{kind_of(info.st_mode)}, not a regular file"
    if info.st_uid != uid:
        return f"owned by uid {info.st_uid}, not {uid}"
    if info.st_nlink != 1:
        return f"a file with {info.st_nlink} hard links"
    return None


def open_anchor(path: str | os.PathLike[str]) -> int:
    """Open a directory whose path the caller trusts (only the control plane can change it);
    its last component must not be a symbolic link. The descriptor is the caller's to close."""
    return os.open(path, _DIR_FLAGS)


def _open_child(fd: int, part: str, rel: str, done: int) -> int:
    """Open the folder `part` below `fd` (the `done`-th component of `rel`), refusing a link
    or a non-folder there (`Refused`)."""
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            where = "/".join(rel.split("/")[:done])
            raise Refused(where, _what_is(fd, part)) from err
        raise


def open_dir(dir_fd: int, rel: str) -> int:
    """Open the directory `rel` below `dir_fd`, refusing a link on every component
    (`Refused`; `FileNotFoundError` when a component is missing)."""
    fd = os.dup(dir_fd)
    try:
        for done, part in enumerate(components(rel), 1):
            child = _open_child(fd, part, rel, done)
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _what_is(dir_fd: int, name: str) -> str:
    try:
        info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "not a directory"
    return f"{kind_of(info.st_mode)}, not a directory"


def lstat_at(dir_fd: int, rel: str) -> os.stat_result | None:
    """`lstat` of `rel` below `dir_fd` (its folders opened without following links); None
    when it does not exist."""
    parts = components(rel)
    try:
        if len(parts) == 1:
            return os.stat(parts[0], dir_fd=dir_fd, follow_symlinks=False)
        parent = open_dir(dir_fd, "/".join(parts[:-1]))
        try:
            return os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)
    except FileNotFoundError:
        return None


def open_own_file(dir_fd: int, name: str, uid: int, *, shown_as: str = "") -> int:
    """Open `name` (one component) in `dir_fd` for reading, when it is a regular file of
    `uid` with a single link (`Refused` otherwise; `FileNotFoundError` when missing).
    Never opens anything else: no FIFO is opened, no device touched."""
    shown = shown_as or name
    components(name)
    if "/" in name:
        raise Refused(shown, "not a single path component")
    handle = os.open(name, _PATH_FLAGS, dir_fd=dir_fd)
    try:
        info = os.fstat(handle)
        problem = not_own_file(info, uid)
        if problem is not None:
            raise Refused(shown, problem)
        fd = os.open(f"/proc/self/fd/{handle}", _READ_FLAGS)
    finally:
        os.close(handle)
    reopened = os.fstat(fd)
    if (reopened.st_dev, reopened.st_ino) != (info.st_dev, info.st_ino):  # cannot happen
        os.close(fd)
        raise Refused(shown, "changed while it was opened")
    return fd


def reclaim(dir_fd: int, rel: str, uid: int, inode: tuple[int, int]) -> bool:
    """Make sure the file `rel` below `dir_fd` belongs to `uid`, when it is the inode `inode`
    (`st_dev`, `st_ino`), a regular file with a single link: `fchown` to `uid` through its own
    descriptor if someone else owns it. Whether it belongs to `uid` afterwards (False when it
    is missing or not that inode, not a regular file or has several links: nothing changed).
    For a file of the instance that root gave to another uid (see `backups.replication`);
    never follows a link (`Refused` for one on a folder on the way), opens nothing else."""
    parts = components(rel)
    try:
        parent = open_dir(dir_fd, "/".join(parts[:-1])) if len(parts) > 1 else os.dup(dir_fd)
        try:
            handle = os.open(parts[-1], _PATH_FLAGS, dir_fd=parent)
        finally:
            os.close(parent)
    except FileNotFoundError:
        return False
    try:
        info = os.fstat(handle)
        if (info.st_dev, info.st_ino) != inode or not_own_file(info, info.st_uid) is not None:
            return False
        if info.st_uid == uid:
            return True
        fd = os.open(f"/proc/self/fd/{handle}", _READ_FLAGS)
    finally:
        os.close(handle)
    try:
        os.fchown(fd, uid, uid)
    finally:
        os.close(fd)
    return True


def open_own_file_at(root_fd: int, rel: str, uid: int) -> int:
    """`open_own_file` of the relative path `rel` below `root_fd` (no link on any component)."""
    parts = components(rel)
    if len(parts) == 1:
        return open_own_file(root_fd, parts[0], uid, shown_as=rel)
    parent = open_dir(root_fd, "/".join(parts[:-1]))
    try:
        return open_own_file(parent, parts[-1], uid, shown_as=rel)
    finally:
        os.close(parent)


@dataclass(frozen=True)
class Entry:
    """One entry met by `walk`: `rel` its path below the walk's root, `name` its name in the
    directory `dir_fd` (open while the entry is being handled), `info` its `lstat`."""

    rel: str
    name: str
    dir_fd: int
    info: os.stat_result

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.info.st_mode)

    @property
    def is_file(self) -> bool:
        return stat.S_ISREG(self.info.st_mode)


@dataclass
class Skipped:
    """What a walk or a copy left out, and why (rel path -> reason), for notes."""

    entries: dict[str, str] = field(default_factory=dict)

    def add(self, rel: str, reason: str) -> None:
        self.entries.setdefault(rel, reason)

    def summary(self, limit: int = 10) -> str:
        """'a (why), b (why), and 3 more' — empty when nothing was left out."""
        items = [f"{rel} ({why})" for rel, why in sorted(self.entries.items())]
        text = ", ".join(items[:limit])
        if len(items) > limit:
            text += f", and {len(items) - limit} more"
        return text


def walk(
    root_fd: int,
    *,
    prune: Callable[[str], bool] | None = None,
    skipped: Skipped | None = None,
) -> Iterator[Entry]:
    """Every entry below `root_fd`, depth first, names sorted, a directory before what it
    holds; links are never followed. A directory is entered unless `prune(rel)` says not to,
    and only when its `O_NOFOLLOW|O_DIRECTORY` open gives the inode listed, on the root's
    filesystem, less than `MAX_DEPTH` deep; otherwise it is noted in `skipped`. An entry
    that vanishes meanwhile is left out silently."""
    notes = skipped if skipped is not None else Skipped()
    root_dev = os.fstat(root_fd).st_dev
    stack: list[tuple[int, str, Iterator[str]]] = []
    top = os.dup(root_fd)
    stack.append((top, "", iter(sorted(os.listdir(top)))))
    try:
        while stack:
            fd, prefix, names = stack[-1]
            name = next(names, None)
            if name is None:
                os.close(fd)
                stack.pop()
                continue
            rel = prefix + name
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            entry = Entry(rel, name, fd, info)
            yield entry
            if not entry.is_dir or (prune is not None and prune(rel)):
                continue
            if info.st_dev != root_dev:
                notes.add(rel, "another filesystem")
                continue
            if len(stack) >= MAX_DEPTH:
                notes.add(rel, f"deeper than {MAX_DEPTH} levels")
                continue
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError as err:
                notes.add(rel, f"not entered: {err.strerror}")
                continue
            seen = os.fstat(child)
            if (seen.st_dev, seen.st_ino) != (info.st_dev, info.st_ino):
                os.close(child)
                notes.add(rel, "replaced while it was read")
                continue
            try:
                listing = sorted(os.listdir(child))
            except OSError as err:
                os.close(child)
                notes.add(rel, f"not listed: {err.strerror}")
                continue
            stack.append((child, rel + "/", iter(listing)))
    finally:
        for fd, _, _ in stack:
            os.close(fd)


def copy_fd(source: int, target: int) -> int:
    """Copy everything `source` holds from its current offset to `target`; bytes copied."""
    total = 0
    while True:
        try:
            sent = os.sendfile(target, source, None, _CHUNK)
        except OSError as err:
            if err.errno not in (errno.EINVAL, errno.ENOSYS) or total:
                raise
            return total + _copy_by_reads(source, target)
        if sent == 0:
            return total
        total += sent


def _copy_by_reads(source: int, target: int) -> int:
    total = 0
    while chunk := os.read(source, _CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(target, view) :]
        total += len(chunk)
    return total


def make_dirs(root_fd: int, rel: str, *, uid: int | None = None, mode: int = 0o700) -> int:
    """Open the directory `rel` below `root_fd`, creating missing components (mode `mode`,
    given to `uid` with `fchown` when set); a link on any component is `Refused`. Returns
    the descriptor of the last one (the caller closes it)."""
    fd = os.dup(root_fd)
    try:
        for done, part in enumerate(components(rel), 1):
            with contextlib.suppress(FileExistsError):
                os.mkdir(part, mode, dir_fd=fd)
            child = _open_child(fd, part, rel, done)
            os.close(fd)
            fd = child
            if uid is not None:
                os.fchown(fd, uid, uid)
        return fd
    except BaseException:
        os.close(fd)
        raise


def create_file(dir_fd: int, name: str, *, uid: int | None = None, mode: int = 0o600) -> int:
    """Create the new file `name` in `dir_fd` (never an existing one, never through a link),
    mode `mode`, given to `uid` with `fchown` when set; open for writing."""
    components(name)
    fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    try:
        os.fchmod(fd, mode)
        if uid is not None:
            os.fchown(fd, uid, uid)
    except BaseException:
        os.close(fd)
        raise
    return fd


def copy_own_file(
    source_dir: int, name: str, target_dir: int, uid: int, *, owner: int | None = None
) -> None:
    """Copy `name` from `source_dir` (which `open_own_file` must accept for `uid`) to a new
    file of the same name in `target_dir` (mode 0600, given to `owner` when set), with the
    source's modification time."""
    source = open_own_file(source_dir, name, uid)
    try:
        info = os.fstat(source)
        target = create_file(target_dir, name, uid=owner)
        try:
            copy_fd(source, target)
            os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))
        finally:
            os.close(target)
    finally:
        os.close(source)


def hand_over(root_fd: int, uid: int) -> None:
    """Give the whole tree below (and including) `root_fd` to `uid`: `fchown` of every
    directory (mode 0700) and regular file (mode 0600), each through its descriptor. For a
    tree only the control plane could write so far (a staged restore): anything else in it
    (a link, a FIFO) is `Refused`."""
    os.fchown(root_fd, uid, uid)
    os.fchmod(root_fd, 0o700)
    notes = Skipped()
    for entry in walk(root_fd, skipped=notes):
        if entry.is_dir:
            fd = os.open(entry.name, _DIR_FLAGS, dir_fd=entry.dir_fd)
            mode = 0o700
        elif entry.is_file:
            fd = _reopen_regular(os.open(entry.name, _PATH_FLAGS, dir_fd=entry.dir_fd), entry.rel)
            mode = 0o600
        else:
            raise Refused(entry.rel, kind_of(entry.info.st_mode))
        try:
            os.fchown(fd, uid, uid)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    if notes.entries:
        raise Refused(next(iter(notes.entries)), notes.summary())


def _reopen_regular(handle: int, shown: str) -> int:
    """A readable descriptor of the regular file `handle` (an `O_PATH` one, closed here;
    `fchown` and `fchmod` need a real open file)."""
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            raise Refused(shown, kind_of(info.st_mode))
        return os.open(f"/proc/self/fd/{handle}", _READ_FLAGS)
    finally:
        os.close(handle)
