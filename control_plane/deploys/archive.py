"""Checking and unpacking a deploy's archive: one tar.gz of the three code folders.

An archive holds `pb_hooks/`, `pb_migrations/` and `pb_public/` (each optional; a leading
`./` is taken) and nothing else: a member outside them, an absolute path, `..`, a name the
files rules refuse (`control_plane.files.rules`), a link (symbolic or hard), a device, a FIFO,
a member named twice, a file over `max_file_bytes`, more than `max_files` entries or more
bytes than `max_total_bytes` refuse the whole archive (`ArchiveRefused`, naming the member,
never its content). One member outside the folders is taken: the deploy's manifest
(`control_plane.deploys.manifest.MANIFEST_MEMBER`, at the top), when the client sent only what
changed. Pure and blocking: callers run it in a thread.

`unpack` writes into a folder only root can reach (the deploy's private work folder): the
tenant cannot touch it while it is built, so plain paths are safe there.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from control_plane.deploys.manifest import MANIFEST_MAX_BYTES, MANIFEST_MEMBER
from control_plane.files.errors import PathRefused
from control_plane.files.rules import CODE_FOLDERS, split_path

CHUNK = 1 << 20


class ArchiveRefused(Exception):
    """The archive cannot be deployed; `message` names the member at fault."""

    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ArchiveLimits:
    max_file_bytes: int
    max_files: int
    max_total_bytes: int | None  # None: no quota


@dataclass
class Contents:
    """What an unpacked archive holds: files by relative path with their sha256."""

    folders: set[str] = field(default_factory=set)  # the code folders it has
    manifest: dict[str, str] = field(default_factory=dict)
    entries: int = 0
    total_bytes: int = 0
    declared: bytes | None = None  # the manifest member's content, when there is one


def _member_path(name: str) -> tuple[str, ...] | None:
    """The components of a member's name; None for the archive's root itself (`.`/`./`)."""
    if name in (".", "./", ""):
        return None
    if name.startswith("/"):
        raise ArchiveRefused(f"member {name!r}: absolute paths are refused")
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/") if name.endswith("/") and not name.endswith("//") else name
    if not name or name == ".":
        return None
    if ".." in name.split("/"):
        raise ArchiveRefused(f"member {name!r}: `..` is refused")
    if name == MANIFEST_MEMBER:
        return (name,)
    try:
        return split_path(name)
    except PathRefused as refused:
        raise ArchiveRefused(f"member {name!r}: {refused.message}") from None


def unpack(archive: Path, target: Path, limits: ArchiveLimits) -> Contents:
    """Check every member of `archive` and write it below `target` (a fresh private folder:
    folders 0755, files 0644, owned by us; `hand_over` gives them away later)."""
    contents = Contents()
    seen: set[str] = set()
    try:
        tar = tarfile.open(archive, mode="r:gz")  # noqa: SIM115 (closed by the `with` below)
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArchiveRefused(f"not a tar.gz archive ({err})") from None
    with tar:
        try:
            for member in tar:
                parts = _member_path(member.name)
                if parts is None:
                    continue
                rel = "/".join(parts)
                if rel in seen:
                    raise ArchiveRefused(f"member {rel!r} appears twice")
                seen.add(rel)
                if member.issym() or member.islnk():
                    raise ArchiveRefused(f"member {rel!r}: links are refused")
                if not (member.isfile() or member.isdir()):
                    raise ArchiveRefused(f"member {rel!r}: devices, FIFOs are refused")
                if rel == MANIFEST_MEMBER:
                    contents.declared = _read_manifest(tar, member)
                    continue
                contents.entries += 1
                if contents.entries > limits.max_files:
                    raise ArchiveRefused(
                        f"the archive holds more than {limits.max_files} files and folders",
                        507,
                    )
                contents.folders.add(parts[0])
                path = target.joinpath(*parts)
                try:
                    _make_parents(target, parts[:-1])
                    if member.isdir():
                        if len(parts) > 1 or not path.is_dir():
                            path.mkdir(mode=0o755, exist_ok=True)
                        continue
                    if member.size > limits.max_file_bytes:
                        raise ArchiveRefused(
                            f"member {rel!r} is larger than {limits.max_file_bytes} bytes", 413
                        )
                    contents.total_bytes += member.size
                    if (
                        limits.max_total_bytes is not None
                        and contents.total_bytes > limits.max_total_bytes
                    ):
                        raise ArchiveRefused(
                            "the archive is larger than the instance's disk quota allows", 507
                        )
                    contents.manifest[rel] = _write_member(tar, member, path)
                except OSError as err:
                    raise ArchiveRefused(
                        f"member {rel!r} cannot be placed: {err.strerror}"
                    ) from None
        except (tarfile.TarError, EOFError, ValueError) as err:
            raise ArchiveRefused(f"the archive is damaged ({err})") from None
    return contents


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo) -> bytes:
    if not member.isfile() or member.size > MANIFEST_MAX_BYTES:
        raise ArchiveRefused(f"{MANIFEST_MEMBER} is a file of at most {MANIFEST_MAX_BYTES} bytes")
    source = tar.extractfile(member)
    assert source is not None
    with source:
        return source.read(MANIFEST_MAX_BYTES + 1)


def _make_parents(target: Path, parents: tuple[str, ...]) -> None:
    path = target
    for part in parents:
        path = path / part
        if not path.is_dir():
            path.mkdir(mode=0o755)


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, path: Path) -> str:
    source = tar.extractfile(member)
    assert source is not None
    digest = hashlib.sha256()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with source, os.fdopen(fd, "wb") as out:
        while piece := source.read(CHUNK):
            digest.update(piece)
            out.write(piece)
    os.chmod(path, 0o644)
    return digest.hexdigest()


def pack(source: Path, folders: list[str], archive: Path) -> tuple[int, str]:
    """Write the code `folders` of `source` (a private folder) as a tar.gz at `archive`
    (0600); its size and sha256."""
    fd = os.open(archive, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # level 1: the kept archive is local and read back rarely; level 9 (tarfile's default)
    # spent seconds per deploy of a large pb_public (bench/deploy.py)
    with (
        os.fdopen(fd, "wb") as raw,
        tarfile.open(fileobj=raw, mode="w:gz", compresslevel=1) as tar,
    ):
        for folder in sorted(folders):
            if folder in CODE_FOLDERS and (source / folder).is_dir():
                tar.add(source / folder, arcname=folder, filter=_plain)
    digest = hashlib.sha256()
    size = 0
    with open(archive, "rb") as handle:
        while piece := handle.read(CHUNK):
            size += len(piece)
            digest.update(piece)
    return size, digest.hexdigest()


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
    if not (info.isfile() or info.isdir()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info
