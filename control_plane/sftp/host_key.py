"""The SFTP server's host key: one ed25519 key, made on first start and kept in `PF_DATA_DIR`.

`load_host_key(path)` reads the key (a file readable by others is made 0600 first, a symlink or
non-regular file is refused) or, when there is none, generates one and writes it with
`O_EXCL | O_NOFOLLOW`, mode 0600 — so two processes starting at once end up with the same key.
The public half's fingerprint is what clients see on first connection; `HostKey` carries it.
Blocking (run it in a thread).
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from control_plane.sftp.keys import fingerprint_of

log = logging.getLogger(__name__)

HOST_KEY_MODE = 0o600
_MAX_BYTES = 64 * 1024


class HostKeyError(Exception):
    """The host key file exists but cannot be used (says why)."""


@dataclass(frozen=True)
class HostKey:
    private: asyncssh.SSHKey
    key_type: str  # "ssh-ed25519"
    public_line: str  # "ssh-ed25519 BASE64"
    fingerprint: str  # "SHA256:..."


def _described(key: asyncssh.SSHKey) -> HostKey:
    public = key.convert_to_public()
    line = public.export_public_key("openssh").decode("ascii").split()
    return HostKey(
        private=key,
        key_type=public.get_algorithm(),
        public_line=f"{line[0]} {line[1]}",
        fingerprint=fingerprint_of(public.public_data),
    )


def _read(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise HostKeyError(f"cannot read the SFTP host key {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise HostKeyError(f"the SFTP host key {path} is not a regular file")
        if info.st_mode & 0o077:
            log.warning("the SFTP host key %s was readable by others; it is now 0600", path)
            os.fchmod(file.fileno(), HOST_KEY_MODE)
        return file.read(_MAX_BYTES)


def _create(path: Path) -> bytes:
    data = asyncssh.generate_private_key("ssh-ed25519").export_private_key("openssh")
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, flags, HOST_KEY_MODE)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temporary, path)  # atomic, and never over a key another process just made
    except FileExistsError:
        return _read(path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    log.info("created the SFTP host key %s", path)
    return data


def load_host_key(path: Path) -> HostKey:
    """The host key kept at `path`, made first if there is none."""
    try:
        data = _read(path)
    except FileNotFoundError:
        data = _create(path)
    try:
        key = asyncssh.import_private_key(data)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise HostKeyError(f"the SFTP host key {path} is not a private key: {exc}") from None
    return _described(key)
