"""Deploys that send only what changed: a manifest of content hashes.

A client (the CLI) lists every file it wants live as `relative path -> sha256` and asks for a
plan (`plan`): the server answers which of those contents the instance lacks. The client then
sends one tar.gz that holds a member `MANIFEST_MEMBER` (the whole wanted set, as JSON) and the
files of the missing contents only. While staging the deploy, each path the archive does not
carry is filled from a file with the same content: one the archive carries, or one of the
instance's live code folders (`fill`). A content found in neither (the live files changed
since the plan) leaves the deploy `Stale`: the client sends everything again.

Live files are read as the control plane reads a tenant's files everywhere (`safe_fs`): only
regular files of the instance's uid with a single link, no link followed. A copy is hashed as
it is made and kept only when it has the content wanted: a tenant changing a file meanwhile
cannot slip other content into a deploy.

Pure and blocking: callers run it in a thread.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import BaseModel, Field, ValidationError, field_validator

from control_plane import safe_fs
from control_plane.files.errors import PathRefused
from control_plane.files.rules import CODE_FOLDERS, split_path

MANIFEST_MEMBER = "pocketfleet-manifest.json"
MANIFEST_MAX_BYTES = 8 << 20
CHUNK = 1 << 20
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestRefused(Exception):
    """The manifest cannot be used; `message` says why (naming the path at fault)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Stale(Exception):
    """Contents the manifest names are neither in the archive nor live any more."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(f"{len(paths)} files")
        self.paths = paths


def check_path(rel: str) -> str:
    """`rel` when the deploy rules take it as a file's path (`PathRefused` otherwise)."""
    parts = split_path(rel)
    if len(parts) < 2:
        raise PathRefused("a file's path lies below one of the code folders")
    return "/".join(parts)


class DeployManifest(BaseModel):
    """The files a deploy makes live (path -> sha256 of the content), and folders to make
    even when they hold no file."""

    files: dict[str, str] = Field(default_factory=dict)
    folders: list[str] = Field(default_factory=list)

    @field_validator("files")
    @classmethod
    def _files(cls, value: dict[str, str]) -> dict[str, str]:
        checked: dict[str, str] = {}
        for rel, digest in value.items():
            try:
                path = check_path(rel)
            except PathRefused as refused:
                raise ValueError(f"{rel[:200]!r}: {refused.message}") from None
            if not _SHA256.match(digest):
                raise ValueError(f"{path!r}: the content hash is 64 lowercase hex digits")
            checked[path] = digest
        return checked

    @field_validator("folders")
    @classmethod
    def _folders(cls, value: list[str]) -> list[str]:
        checked: list[str] = []
        for rel in value:
            try:
                checked.append("/".join(split_path(rel)))
            except PathRefused as refused:
                raise ValueError(f"{rel[:200]!r}: {refused.message}") from None
        return checked


def parse(raw: bytes) -> DeployManifest:
    """The manifest member's JSON (`ManifestRefused` with the first problem otherwise)."""
    try:
        return DeployManifest.model_validate(orjson.loads(raw))
    except orjson.JSONDecodeError as err:
        raise ManifestRefused(f"{MANIFEST_MEMBER} is not JSON ({err})") from None
    except ValidationError as err:
        first = err.errors()[0]
        raise ManifestRefused(f"{MANIFEST_MEMBER}: {first['msg']}") from None


@dataclass(frozen=True)
class LiveFile:
    folder: str  # the code folder it lies in
    rel: str  # its path below that folder


@dataclass
class LiveContents:
    """The instance's live code files by content: sha256 -> one file holding it."""

    by_hash: dict[str, LiveFile] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)  # "pb_public/a.js" -> sha256


def _hash_fd(fd: int) -> str:
    digest = hashlib.sha256()
    while piece := os.read(fd, CHUNK):
        digest.update(piece)
    return digest.hexdigest()


def live_contents(root: Path, uid: int) -> LiveContents:
    """Hash every regular file of the instance's (`root`) code folders that `uid` owns."""
    found = LiveContents()
    try:
        root_fd = safe_fs.open_anchor(root)
    except FileNotFoundError:
        return found  # never started: nothing live
    try:
        for folder in CODE_FOLDERS:
            try:
                folder_fd = safe_fs.open_dir(root_fd, folder)
            except (FileNotFoundError, safe_fs.Refused):
                continue
            try:
                for entry in safe_fs.walk(folder_fd):
                    if not entry.is_file or entry.name.startswith("."):
                        continue
                    try:
                        fd = safe_fs.open_own_file(entry.dir_fd, entry.name, uid)
                    except (safe_fs.Refused, FileNotFoundError):
                        continue
                    try:
                        digest = _hash_fd(fd)
                    finally:
                        os.close(fd)
                    found.by_hash.setdefault(digest, LiveFile(folder, entry.rel))
                    found.paths[f"{folder}/{entry.rel}"] = digest
            finally:
                os.close(folder_fd)
    finally:
        os.close(root_fd)
    return found


@dataclass(frozen=True)
class Plan:
    """What a deploy of `wanted` needs: the contents to send, and what it changes."""

    missing: list[str]  # sha256 of the contents the instance lacks, sorted
    added: list[str]  # paths the instance does not have
    changed: list[str]  # paths whose content differs
    removed: list[str]  # live paths the deploy removes (none with `keep`)
    unchanged: int


def plan(
    root: Path,
    uid: int,
    wanted: DeployManifest,
    *,
    keep: bool,
    platform_file: Callable[[str], bool] = lambda rel: False,
) -> Plan:
    """Compare `wanted` with the live folders; `platform_file(rel)`: a file the platform
    writes itself (never counted as removed)."""
    live = live_contents(root, uid)
    missing = sorted({d for d in wanted.files.values() if d not in live.by_hash})
    added = sorted(p for p in wanted.files if p not in live.paths)
    changed = sorted(p for p, d in wanted.files.items() if p in live.paths and live.paths[p] != d)
    removed = (
        []
        if keep
        else sorted(p for p in live.paths if p not in wanted.files and not platform_file(p))
    )
    unchanged = sum(1 for p, d in wanted.files.items() if live.paths.get(p) == d)
    return Plan(missing, added, changed, removed, unchanged)


def _copy_checked(source_fd: int, target: Path, digest: str) -> bool:
    """Copy `source_fd` to the new file `target` (0644); keep it only with content `digest`."""
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    seen = hashlib.sha256()
    with os.fdopen(out, "wb") as handle:
        while piece := os.read(source_fd, CHUNK):
            seen.update(piece)
            handle.write(piece)
    if seen.hexdigest() != digest:
        target.unlink()
        return False
    return True


def _make_parents(staged: Path, rel: str) -> Path:
    path = staged
    for part in rel.split("/")[:-1]:
        path = path / part
        if not path.is_dir():
            path.mkdir(mode=0o755)
    return staged / rel


def fill(staged: Path, sent: dict[str, str], wanted: DeployManifest, root: Path, uid: int) -> int:
    """Complete the staged folders (`staged`, private to us, holding what the archive sent:
    `sent` path -> sha256) so that they hold exactly `wanted`. Returns how many files came
    from the live folders; raises `ManifestRefused` when the archive sent a file the manifest
    does not name or with other content, `Stale` when contents cannot be found."""
    for rel, digest in sent.items():
        if rel not in wanted.files:
            raise ManifestRefused(f"member {rel!r} is not in {MANIFEST_MEMBER}")
        if wanted.files[rel] != digest:
            raise ManifestRefused(f"member {rel!r} does not have the content the manifest names")
    needed = {rel: d for rel, d in wanted.files.items() if rel not in sent}
    for rel in wanted.folders:
        (staged / rel).mkdir(mode=0o755, parents=True, exist_ok=True)
    if not needed:
        return 0
    in_archive = {d: rel for rel, d in sent.items()}
    live: LiveContents | None = None  # every live file hashed only when one is needed
    stale: list[str] = []
    from_live = 0
    try:
        root_fd: int | None = safe_fs.open_anchor(root)
    except FileNotFoundError:
        root_fd = None  # never started: nothing live
    try:
        for rel, digest in sorted(needed.items()):
            target = _make_parents(staged, rel)
            if digest in in_archive:
                with open(staged / in_archive[digest], "rb") as source:
                    ok = _copy_checked(source.fileno(), target, digest)
            elif root_fd is None:
                ok = False
            else:
                # most often the live file at the same path, unchanged; else any live file
                # with that content (a rename)
                folder, _, below = rel.partition("/")
                ok = _copy_live(root_fd, LiveFile(folder, below), uid, target, digest)
                if not ok:
                    live = live if live is not None else live_contents(root, uid)
                    source_file = live.by_hash.get(digest)
                    ok = source_file is not None and _copy_live(
                        root_fd, source_file, uid, target, digest
                    )
                from_live += ok
            if not ok:
                stale.append(rel)
    finally:
        if root_fd is not None:
            os.close(root_fd)
    if stale:
        raise Stale(stale)
    return from_live


def _copy_live(root_fd: int, source: LiveFile, uid: int, target: Path, digest: str) -> bool:
    try:
        folder_fd = safe_fs.open_dir(root_fd, source.folder)
    except (FileNotFoundError, safe_fs.Refused):
        return False
    try:
        fd = safe_fs.open_own_file_at(folder_fd, source.rel, uid)
    except (FileNotFoundError, safe_fs.Refused, NotADirectoryError):
        return False
    finally:
        os.close(folder_fd)
    try:
        return _copy_checked(fd, target, digest)
    finally:
        os.close(fd)
