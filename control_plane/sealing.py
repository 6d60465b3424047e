"""Sealing small secrets at rest: the control plane's keys, and Fernet over them.

A `Keyring` seals a text into `fernet:KEYID:TOKEN` (Fernet: AES-128-CBC with an HMAC-SHA256,
`cryptography`'s implementation; KEYID is the first 8 hex digits of the SHA-256 of the key, so
a sealed value names the key that opens it) and opens such a text again with any of its keys.
New values are always sealed with the primary key; the others only open older values.

Where the keys come from (`load_keyring`):
- `PF_SECRET_KEY`: one or more Fernet keys, separated by commas; the first is the primary.
  The key file, when it exists, still opens values sealed before (so an operator can move from
  the file to `PF_SECRET_KEY`, or rotate keys by putting a new one first).
- otherwise the key file `PF_DATA_DIR/secret.key`, created on first start: written to a
  temporary file created with `O_EXCL` and mode 0600 (never readable by anyone else, not even
  for an instant), synced, then hard-linked into place, which fails rather than replaces when
  another process created the key first (that process's key is then used). A key file readable
  by others is tightened to 0600 with a warning; a symlink or a malformed file is refused.

A new key is generated with
`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from control_plane.settings import Settings

log = logging.getLogger(__name__)

SCHEME = "fernet"
KEY_FILE_MODE = 0o600
_KEY_FILE_MAX = 4096


class KeyringError(Exception):
    """The control plane's keys cannot be loaded (bad `PF_SECRET_KEY`, unreadable key file)."""


class SealedValueError(Exception):
    """A sealed value that none of the keys opens, or that is not a sealed value at all."""


def key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _fernet(key: bytes, source: str) -> Fernet:
    try:
        return Fernet(key)
    except ValueError as exc:
        raise KeyringError(
            f"{source} is not a Fernet key (32 url-safe base64-encoded bytes); generate one with "
            '`python -c "from cryptography.fernet import Fernet; '
            'print(Fernet.generate_key().decode())"`'
        ) from exc


class Keyring:
    """Seals with the primary key; opens with any key."""

    def __init__(self, primary: bytes, others: Sequence[bytes] = ()) -> None:
        self._primary = _fernet(primary, "the primary key")
        self.primary_id = key_id(primary)
        self._keys: dict[str, Fernet] = {self.primary_id: self._primary}
        for key in others:
            self._keys.setdefault(key_id(key), _fernet(key, "a key"))

    def seal(self, plaintext: str) -> str:
        token = self._primary.encrypt(plaintext.encode("utf-8")).decode("ascii")
        return f"{SCHEME}:{self.primary_id}:{token}"

    def open(self, sealed: str) -> str:
        """The plaintext of `sealed`; SealedValueError when no key opens it."""
        scheme, _, rest = sealed.partition(":")
        kid, _, token = rest.partition(":")
        if scheme != SCHEME or not token:
            raise SealedValueError("not a sealed value")
        fernet = self._keys.get(kid)
        if fernet is None:
            raise SealedValueError(
                f"this value was sealed with key {kid}, which this control plane does not have "
                "(set PF_SECRET_KEY to include it, or restore PF_DATA_DIR/secret.key)"
            )
        try:
            return fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError) as exc:
            raise SealedValueError(f"a value sealed with key {kid} is damaged") from exc

    def is_current(self, sealed: str) -> bool:
        """Whether `sealed` is sealed with the primary key (else it should be sealed again)."""
        return sealed.startswith(f"{SCHEME}:{self.primary_id}:")


def load_keyring(settings: Settings) -> Keyring:
    """The keyring of this control plane (see the module's docstring); creates the key file
    when there is no `PF_SECRET_KEY` and no file yet."""
    path = settings.secret_key_file
    if settings.secret_key:
        keys = [part.strip().encode("ascii") for part in settings.secret_key.split(",")]
        keys = [key for key in keys if key]
        if not keys:
            raise KeyringError("PF_SECRET_KEY is set but holds no key")
        for number, key in enumerate(keys, 1):
            _fernet(key, f"key {number} of PF_SECRET_KEY")
        with contextlib.suppress(FileNotFoundError):
            keys.append(read_key_file(path))
        return Keyring(keys[0], keys[1:])
    try:
        return Keyring(read_key_file(path))
    except FileNotFoundError:
        return Keyring(create_key_file(path))


def read_key_file(path: Path) -> bytes:
    """The key in `path` (FileNotFoundError when there is none); a file readable by others is
    made 0600 first."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise KeyringError(f"{path} is a symbolic link; it must be a regular file") from exc
        raise KeyringError(f"cannot read the key file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise KeyringError(f"{path} is not a regular file")
        if info.st_mode & 0o077:
            log.warning(
                "the key file %s was readable by others (mode %o); it is now 0600",
                path,
                stat.S_IMODE(info.st_mode),
            )
            os.fchmod(file.fileno(), KEY_FILE_MODE)
        key = file.read(_KEY_FILE_MAX).strip()
    _fernet(key, f"the content of {path}")
    return key


def create_key_file(path: Path) -> bytes:
    """A new key, written to `path` unless another process has just written one (whose key
    is then returned instead)."""
    key = Fernet.generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    _write_new_file(temporary, key + b"\n")
    try:
        try:
            os.link(temporary, path)
        except FileExistsError:
            return read_key_file(path)
        except OSError as exc:  # no hard links on this filesystem: create it in place
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
                raise
            try:
                _write_new_file(path, key + b"\n")
            except FileExistsError:
                return read_key_file(path)
    finally:
        temporary.unlink(missing_ok=True)
    _sync_folder(path.parent)
    log.info("created the key that seals secrets at rest: %s", path)
    return key


def _write_new_file(path: Path, content: bytes) -> None:
    """Create `path` (never an existing file, never through a link) with mode 0600."""
    fd = os.open(
        path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, KEY_FILE_MODE
    )
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
