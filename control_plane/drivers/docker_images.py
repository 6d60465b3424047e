"""Container images of engines for the `docker` driver, built by pocketfleet itself.

No registry is involved: an image is made here from what pocketfleet installed and given to
the Docker engine with `docker import` (the SDK's `import_image_from_file`), once per engine
version; afterwards it is found by its tag.

- An engine whose runtime (`Engine.runtime_paths`) holds only static executables (ELF files
  without an interpreter: PocketBase's binary) gets an image of exactly that: its runtime paths
  at their own absolute paths (so the argv that `serve_command` builds runs unchanged in the
  container), the host's CA certificates at `/etc/ssl/certs/ca-certificates.crt` (for the
  engine's outbound HTTPS: OAuth2, S3, SMTP over TLS), and empty `/tmp` and `/etc` folders.
  Nothing else: no shell, no libc, no users.
- Tag: `pocketfleet/ENGINE:VERSION-DIGEST`, where DIGEST covers the paths, sizes, modes and
  modification times of every file the image holds: a reinstalled binary or new CA
  certificates make a new image, and two control planes with different data folders (so
  different runtime paths) never share one by mistake.
- An engine with a dynamic executable or an interpreter (the `pocketfleet` engine) needs a
  root file system under it (a Debian root made with `debootstrap`): `ImageError` says so.

Blocking (tar files and engine API calls): async callers use `asyncio.to_thread`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors

from control_plane.engines.base import Engine

log = logging.getLogger(__name__)

CA_CERTIFICATES = Path("/etc/ssl/certs/ca-certificates.crt")
REPOSITORY_PREFIX = "pocketfleet/"
IMAGE_LABEL = "pocketfleet.image"
_ELF_MAGIC = b"\x7fELF"
_PT_INTERP = 3
_DIGEST_CHARS = 12


class ImageError(Exception):
    """An engine's image cannot be built here (or the Docker engine refused it)."""


def _is_static_elf(path: Path) -> bool:
    """Whether `path` is an ELF executable with no program interpreter (statically linked).
    Reads its header and program headers only."""
    with path.open("rb") as file:
        ident = file.read(16)
        if len(ident) < 16 or ident[:4] != _ELF_MAGIC:
            return False
        wide, order = ident[4] == 2, "<" if ident[5] == 1 else ">"
        layout = order + ("16xQ14xHH" if wide else "12xI10xHH")
        header = file.read(struct.calcsize(layout))
        phoff, phentsize, phnum = struct.unpack(layout, header)
        for index in range(phnum):
            file.seek(phoff + index * phentsize)
            (kind,) = struct.unpack(order + "I", file.read(4))
            if kind == _PT_INTERP:
                return False
    return True


def _files(paths: list[Path]) -> Iterator[Path]:
    """Every file and folder under `paths` (absolute), sorted, never following a link."""
    for top in paths:
        yield top
        if top.is_dir() and not top.is_symlink():
            for parent, dirs, files in os.walk(top):
                dirs.sort()
                for name in (*dirs, *sorted(files)):
                    yield Path(parent) / name


def image_contents(engine: Engine, version: str) -> list[Path]:
    """The host files an image of `engine` at `version` holds (absolute paths, their folders
    first); raises `ImageError` at the first file showing that the engine needs more than its
    static executables (a link, or an executable with an interpreter)."""
    runtime = [Path(os.path.abspath(path)) for path in engine.runtime_paths(version)]
    needs_root = "its image needs a root file system (a Debian root made with debootstrap), "
    needs_root += "which the docker driver does not build yet"
    found: list[Path] = []
    for path in _files(runtime):
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            raise ImageError(f"engine {engine.name} {version}: {path} is a link; {needs_root}")
        executable = stat.S_ISREG(info.st_mode) and info.st_mode & 0o111
        if executable and not _is_static_elf(path):
            raise ImageError(
                f"engine {engine.name} {version}: {path} is not a static executable; {needs_root}"
            )
        found.append(path)
    if not found:
        raise ImageError(f"engine {engine.name} {version} has no runtime files")
    if not CA_CERTIFICATES.is_file():
        log.warning("no %s here: images get no CA certificates (no outbound TLS)", CA_CERTIFICATES)
        return found
    return [*found, CA_CERTIFICATES]


def image_tag(engine: Engine, version: str, contents: list[Path]) -> str:
    """`pocketfleet/ENGINE:VERSION-DIGEST` (see the module docstring)."""
    digest = hashlib.sha256()
    for path in contents:
        info = path.stat()
        digest.update(f"{path}\0{info.st_size}\0{info.st_mode}\0{info.st_mtime_ns}\n".encode())
    return f"{REPOSITORY_PREFIX}{engine.name}:{version}-{digest.hexdigest()[:_DIGEST_CHARS]}"


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def write_root_tar(contents: list[Path], out: Path) -> None:
    """A tar of `contents` at their own paths, every parent folder included (mode 0755),
    owned by root, plus empty `/tmp` (1777) and `/etc` folders."""
    folders: set[str] = set()

    def add_folder(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
        if name in folders:
            return
        folders.add(name)
        info = tarfile.TarInfo(name)
        info.type, info.mode = tarfile.DIRTYPE, mode
        tar.addfile(_root_owned(info))

    with tarfile.open(out, "w", dereference=True) as tar:  # a linked CA bundle: its content
        add_folder(tar, "tmp", 0o1777)
        add_folder(tar, "etc")
        for path in contents:
            name = str(path).lstrip("/")
            parts = name.split("/")
            for depth in range(1, len(parts)):
                add_folder(tar, "/".join(parts[:depth]))
            if path.is_dir():
                add_folder(tar, name, stat.S_IMODE(path.stat().st_mode) | 0o555)
                continue
            folders.add(name)
            tar.add(path, arcname=name, recursive=False, filter=_root_owned)


class EngineImages:
    """Finds or builds (once) the image of an engine version on one Docker engine."""

    def __init__(self, client: docker.APIClient, work_dir: Path) -> None:
        self.client = client
        self.work_dir = work_dir
        self._known: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def ensure(self, engine: Engine, version: str) -> str:
        """The tag of the image of `engine` at `version`, imported now if the Docker engine
        does not have it; raises `ImageError`. Blocking."""
        with self._lock:
            contents = image_contents(engine, version)
            tag = image_tag(engine, version, contents)
            if self._known.get((engine.name, version)) == tag:
                return tag
            try:
                self.client.inspect_image(tag)  # type: ignore[no-untyped-call]  # (the stubs)
            except docker.errors.ImageNotFound:
                self._import(tag, contents)
            except docker.errors.DockerException as err:
                raise ImageError(f"the Docker engine cannot be asked for {tag}: {err}") from err
            self._known[(engine.name, version)] = tag
            return tag

    def _import(self, tag: str, contents: list[Path]) -> None:
        repository, _, version = tag.rpartition(":")
        self.work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".image-", dir=self.work_dir) as tmp:
            archive = Path(tmp) / "root.tar"
            write_root_tar(contents, archive)
            try:
                self.client.import_image_from_file(
                    str(archive),
                    repository=repository,
                    tag=version,
                    changes=[f"LABEL {IMAGE_LABEL}={tag}", "WORKDIR /"],
                )
                self.client.inspect_image(tag)  # type: ignore[no-untyped-call]  # (the stubs)
            except docker.errors.DockerException as err:
                raise ImageError(f"cannot import the image {tag}: {err}") from err
        log.info("imported the image %s (%d files)", tag, len(contents))
