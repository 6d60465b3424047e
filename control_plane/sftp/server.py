"""The SFTP server of `pocketfleet serve`: tenants put their code into their instances.

`SftpServer(settings, keys, files)`; `await start()` listens on `PF_SFTP`
(nothing when it is off), `await close()` stops listening and ends every session (uploads in
flight are aborted).

**Logins.** The SSH user name is the instance's name. Public keys only — no password, no
keyboard-interactive, no host-based login, no certificates: a key opens the instance when
`SshKeyService.authorize` says so (a key of the instance's owner, not suspended, the key
opening all the owner's instances or this one). A session re-asks every `RECHECK_S` seconds
(at its next operation; at once before every change), and a removed key's sessions are
closed at once. Owners only: an operator's key opens the operator's own instances. Bounds:
`MAX_CONNECTIONS` at once, `MAX_KEY_TRIES` keys asked about per connection, `MAX_OPEN_FILES`
open files per connection, reads of at most `MAX_READ` bytes, logins within `LOGIN_TIMEOUT_S`.

**Sessions.** Only the `sftp` subsystem: no shell, no exec (so no legacy `scp -O`; OpenSSH's
`scp` speaks SFTP since 9.0), no pty, no port, agent or X11 forwarding. A session's `/` shows
the instance's `pb_hooks/`, `pb_migrations/` and `pb_public/` and nothing else. Every operation
goes through one `control_plane.files.tree.InstanceFiles` per session, made by
`FileService.files_for` (the files API's rules, limits and quota; blocking work in threads;
what the session added is recorded on the instance's measured usage when it ends). Changes are
refused while the instance is held (a restore) or being deleted. Paths are taken as given
(`..`, links and names outside the three folders are refused, never resolved), except by
`realpath`, which only normalises text so that clients can `cd ..`.

Writes: `open` (write) is `InstanceFiles.open_upload`, `write` is `Upload.write_at` at the
client's offsets, `close` is `commit` — atomic: readers see the old file until the close. A
write without truncate keeps the old content (copied into the upload first) and append mode
writes at the end. A session that ends with an upload open (the connection lost, the client
killed) aborts it. Reading and writing one handle at once, links (`symlink`, `link`,
`readlink`), truncating through `setstat` and `statvfs` are refused; modes and times sent by
clients are accepted and ignored (files are 0644, folders 0755, owned by the instance).

Refusals map to SFTP statuses: not there → no such file; outside the folders, a link or
special file → permission denied; anything else (too large, over quota, exists, not empty) →
failure (or the specific SFTPv6 code, which v3 clients see as failure) with the message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import stat
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import BinaryIO, TypeVar

import asyncssh

from control_plane.db.models import Instance
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
)
from control_plane.files.service import FileService
from control_plane.files.tree import FileEntry, Upload, entry_of
from control_plane.limits import disk_limit_mb_of
from control_plane.settings import Settings
from control_plane.sftp.keys import fingerprint_of
from control_plane.sftp.service import Grant, SshKeyService

log = logging.getLogger(__name__)

RECHECK_S = 5.0  # how stale a session's grant may get before it is asked again
LOGIN_TIMEOUT_S = 30.0
CLOSE_GRACE_S = 5.0
MAX_CONNECTIONS = 100  # at once (logged in or not); more are cut at once
MAX_KEY_TRIES = 20  # keys one connection may ask about (asyncssh sets no limit of its own)
MAX_OPEN_FILES = 32  # files one connection holds open at once
MAX_READ = 4 * 1024 * 1024  # bytes one read answers at most (what limits@openssh.com says)
_COPY_CHUNK = 256 * 1024
_ROOT_MODE = stat.S_IFDIR | 0o555  # "/" holds the three folders; nothing is made there

T = TypeVar("T")


def _status(refusal: FileRefused) -> asyncssh.SFTPError:
    """The SFTP status of a refusal of the files layer (its message, never file contents)."""
    message = refusal.message
    if isinstance(refusal, NotThere):
        return asyncssh.SFTPNoSuchFile(message)
    if isinstance(refusal, PathRefused | LinkOrSpecial):
        return asyncssh.SFTPPermissionDenied(message)
    if isinstance(refusal, Exists):
        return asyncssh.SFTPFileAlreadyExists(message)
    if isinstance(refusal, NotAFile):
        return asyncssh.SFTPFileIsADirectory(message)
    if isinstance(refusal, NotADir):
        return asyncssh.SFTPNotADirectory(message)
    if isinstance(refusal, NotEmpty):
        return asyncssh.SFTPDirNotEmpty(message)
    if isinstance(refusal, OverQuota):
        return asyncssh.SFTPQuotaExceeded(message)
    return asyncssh.SFTPFailure(message)


def _attrs(entry: FileEntry) -> asyncssh.SFTPAttrs:
    seconds = int(entry.modified.timestamp())
    if entry.kind == "dir":
        kind, mode = asyncssh.FILEXFER_TYPE_DIRECTORY, stat.S_IFDIR | 0o755
    else:
        kind, mode = asyncssh.FILEXFER_TYPE_REGULAR, stat.S_IFREG | 0o644
    return asyncssh.SFTPAttrs(
        type=kind, size=entry.size, permissions=mode, atime=seconds, mtime=seconds, nlink=1
    )


def _root_attrs() -> asyncssh.SFTPAttrs:
    now = int(time.time())
    return asyncssh.SFTPAttrs(
        type=asyncssh.FILEXFER_TYPE_DIRECTORY,
        size=0,
        permissions=_ROOT_MODE,
        atime=now,
        mtime=now,
        nlink=1,
    )


def _relative(path: bytes) -> str:
    """The client's path as the files layer's relative path ("" for `/`). Leading slashes go
    (the session's `/` is the instance); nothing else is changed: `..` stays and is refused."""
    try:
        text = path.decode("utf-8")
    except UnicodeDecodeError:
        raise asyncssh.SFTPInvalidFilename("a path must be UTF-8") from None
    text = text.lstrip("/")
    return "" if text in ("", ".") else text


@dataclass
class _Reading:
    file: BinaryIO
    entry: FileEntry


@dataclass(eq=False)
class _Writing:
    upload: Upload
    rel: str
    append: bool
    refused: asyncssh.SFTPError | None = None


class _Login(asyncssh.SSHServer):
    """One SSH connection: its login, then what its sessions may open."""

    def __init__(self, server: SftpServer) -> None:
        self.server = server
        self.conn: asyncssh.SSHServerConnection | None = None
        self.grant: Grant | None = None
        self.fingerprint = ""
        self.checked_at = 0.0
        self.lost = False
        self.open_files = 0
        self.key_tries = 0
        self._tried: tuple[str, Grant] | None = None

    # ----- connection

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        if len(self.server.connections) >= MAX_CONNECTIONS:
            log.warning("SFTP: %d connections already; one more was cut", MAX_CONNECTIONS)
            conn.close()
            return
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    # ----- authentication: public keys only

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_ca_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return False  # no certificates

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        self.key_tries += 1
        if self.key_tries > MAX_KEY_TRIES:
            self.close()
            return False
        fingerprint = fingerprint_of(key.public_data)
        grant = await self.server.keys.authorize(username, fingerprint)
        # the last key validated before success is the one whose signature was checked
        self._tried = (fingerprint, grant) if grant is not None else None
        return grant is not None

    async def auth_completed(self) -> None:
        assert self._tried is not None, "a login succeeded through a validated key only"
        self.fingerprint, self.grant = self._tried
        self.checked_at = time.monotonic()
        await self.server.keys.mark_used(self.grant.key_id)

    # ----- everything but SFTP is refused (asyncssh's defaults, said here)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> bool:
        return False

    def unix_connection_requested(self, dest_path: str) -> bool:
        return False

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    # ----- during a session

    async def current_grant(self, *, fresh: bool = False) -> Grant:
        """The session's grant, asked again when older than `RECHECK_S` (or now, `fresh`);
        a key removed, an account suspended, an instance deleted since the login end the
        connection."""
        grant = self.grant
        if grant is None:
            raise asyncssh.SFTPPermissionDenied("not logged in")
        if not fresh and time.monotonic() - self.checked_at < RECHECK_S:
            return grant
        now = await self.server.keys.authorize(grant.instance_name, self.fingerprint)
        if now is None or now.instance.id != grant.instance.id:
            self.grant = None
            self.close()
            raise asyncssh.SFTPPermissionDenied("this key no longer opens this instance")
        self.grant, self.checked_at = now, time.monotonic()
        return now


class _InstanceSftp(asyncssh.SFTPServer):
    """One SFTP session over one instance's code folders (see the module's docstring)."""

    def __init__(
        self,
        chan: asyncssh.SSHServerChannel[bytes],
        login: _Login,
        service: FileService,
        instance: Instance,
    ) -> None:
        super().__init__(chan)
        self.login = login
        self.service = service
        self.instance = instance
        self.files = service.files_for(instance)
        self.instance_name = instance.name or ""
        self.uploads: set[_Writing] = set()

    async def _changing(self) -> None:
        """Before a change: the grant asked afresh, and the instance not held."""
        grant = await self.login.current_grant(fresh=True)
        if grant.busy is not None:
            raise asyncssh.SFTPFailure(grant.busy)

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        """`call(*args)` in a thread, after the grant check; refusals as SFTP statuses."""
        await self.login.current_grant()
        try:
            return await asyncio.to_thread(call, *args)
        except FileRefused as refusal:
            raise _status(refusal) from None
        except OSError:
            raise  # asyncssh maps errno values to statuses (and sends strerror only)
        except asyncssh.SFTPError:
            raise
        except Exception:
            log.exception("SFTP operation failed on %s", self.instance_name)
            raise asyncssh.SFTPFailure("the operation failed on the server") from None

    async def _entry(self, rel: str) -> FileEntry | None:
        """What is at `rel`, or None when nothing is (the root is None too: not a file)."""
        try:
            return await self._run(self.files.stat, rel)
        except asyncssh.SFTPNoSuchFile:
            return None

    # ----- names

    def format_user(self, uid: int | None) -> str:
        return self.instance_name

    def format_group(self, gid: int | None) -> str:
        return self.instance_name

    def realpath(self, path: bytes) -> bytes:
        text = path.decode("utf-8", "surrogateescape")
        normal = posixpath.normpath("/" + text.lstrip("/"))
        return normal.encode("utf-8", "surrogateescape")

    async def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        rel = _relative(path)
        if not rel:
            await self.login.current_grant()
            return _root_attrs()
        return _attrs(await self._run(self.files.stat, rel))

    async def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return await self.stat(path)  # nothing here is a link: links are refused

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        rel = _relative(path)
        if rel:
            entry = await self._run(self.files.stat, rel)
            if entry.kind != "dir":
                raise asyncssh.SFTPNotADirectory(f"{entry.path} is a file")
        entries = await self._run(self.files.list, rel)
        for entry in entries:
            yield asyncssh.SFTPName(entry.name.encode("utf-8"), attrs=_attrs(entry))

    # ----- changes of names

    async def mkdir(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self._changing()
        rel = _relative(path)
        parent = posixpath.dirname(rel)
        if "/" in parent and await self._entry(parent) is None:  # one level, like mkdir(2)
            raise asyncssh.SFTPNoSuchFile(f"{parent} does not exist")
        await self._run(self.files.mkdir, rel)

    async def rmdir(self, path: bytes) -> None:
        await self._changing()
        rel = _relative(path)
        entry = await self._run(self.files.stat, rel)
        if entry.kind != "dir":
            raise asyncssh.SFTPNotADirectory(f"{entry.path} is a file")
        await self._run(self.files.delete, rel)

    async def remove(self, path: bytes) -> None:
        await self._changing()
        rel = _relative(path)
        entry = await self._run(self.files.stat, rel)
        if entry.kind == "dir":
            raise asyncssh.SFTPFileIsADirectory(f"{entry.path} is a folder: use rmdir")
        await self._run(self.files.delete, rel)

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        """SFTP's rename: refused when the target exists (posix_rename replaces a file)."""
        target = _relative(newpath)
        if target and await self._entry(target) is not None:
            raise asyncssh.SFTPFileAlreadyExists(f"{target} already exists")
        await self.posix_rename(oldpath, newpath)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._changing()
        await self._run(self.files.move, _relative(oldpath), _relative(newpath))

    def readlink(self, path: bytes) -> bytes:
        raise asyncssh.SFTPPermissionDenied("there are no links here")

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links cannot be made here")

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("links cannot be made here")

    # ----- attributes: accepted and ignored, except a size (no truncating in place)

    async def setstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self.stat(path)
        if attrs.size is not None:
            raise asyncssh.SFTPOpUnsupported("files are written whole: open with truncate")

    async def lsetstat(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> None:
        await self.setstat(path, attrs)

    async def fsetstat(self, file_obj: object, attrs: asyncssh.SFTPAttrs) -> None:
        size = attrs.size
        if size is None:
            return
        if isinstance(file_obj, _Writing) and size == file_obj.upload.size:
            return
        raise asyncssh.SFTPOpUnsupported("files are written whole: open with truncate")

    def statvfs(self, path: bytes) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs is not offered")

    def fstatvfs(self, file_obj: object) -> asyncssh.SFTPVFSAttrs:
        raise asyncssh.SFTPOpUnsupported("statvfs is not offered")

    # ----- files

    def open56(
        self, path: bytes, desired_access: int, flags: int, attrs: asyncssh.SFTPAttrs
    ) -> object:
        raise asyncssh.SFTPOpUnsupported("this server speaks SFTP version 3")

    async def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if self.login.open_files >= MAX_OPEN_FILES:
            raise asyncssh.SFTPFailure(f"at most {MAX_OPEN_FILES} files may be open at once")
        opened = await self._open(_relative(path), pflags)
        self.login.open_files += 1
        return opened

    async def _open(self, rel: str, pflags: int) -> _Reading | _Writing:
        reading, writing = bool(pflags & asyncssh.FXF_READ), bool(pflags & asyncssh.FXF_WRITE)
        if reading and writing:
            raise asyncssh.SFTPOpUnsupported("open a file for reading or for writing, not both")
        if not writing:
            file = await self._run(self.files.open_read, rel)
            try:
                entry = entry_of(self.files.normalized(rel), os.fstat(file.fileno()))
            except BaseException:
                file.close()
                raise
            return _Reading(file, entry)
        if not rel:
            raise asyncssh.SFTPFileIsADirectory("/ is a folder")
        await self._changing()
        existing = await self._entry(rel)
        if existing is not None and pflags & asyncssh.FXF_EXCL:
            raise asyncssh.SFTPFileAlreadyExists(f"{existing.path} already exists")
        if existing is None and not pflags & asyncssh.FXF_CREAT:
            raise asyncssh.SFTPNoSuchFile(f"{rel} does not exist")
        if existing is not None and existing.kind == "dir":
            raise asyncssh.SFTPFileIsADirectory(f"{existing.path} is a folder")
        upload = await self._run(self.files.open_upload, rel)
        writing_to = _Writing(upload, rel, append=bool(pflags & asyncssh.FXF_APPEND))
        self.uploads.add(writing_to)
        if existing is not None and not pflags & asyncssh.FXF_TRUNC:
            try:
                await self._run(self._copy_into, rel, upload)
            except BaseException:
                self._drop(writing_to)
                await asyncio.to_thread(upload.abort)
                raise
        return writing_to

    def _copy_into(self, rel: str, upload: Upload) -> None:
        """The current content of `rel` into `upload` (a write that keeps the rest)."""
        with self.files.open_read(rel) as source:
            offset = 0
            while chunk := source.read(_COPY_CHUNK):
                upload.write_at(offset, chunk)
                offset += len(chunk)

    async def read(self, file_obj: object, offset: int, size: int) -> bytes:
        if not isinstance(file_obj, _Reading):
            raise asyncssh.SFTPPermissionDenied("this file is open for writing")
        return await self._run(self._read_at, file_obj.file, offset, min(size, MAX_READ))

    @staticmethod
    def _read_at(file: BinaryIO, offset: int, size: int) -> bytes:
        file.seek(offset)
        return file.read(size)

    async def write(self, file_obj: object, offset: int, data: bytes) -> int:
        if not isinstance(file_obj, _Writing):
            raise asyncssh.SFTPPermissionDenied("this file is open for reading")
        if file_obj.refused is not None:
            raise file_obj.refused
        at = file_obj.upload.size if file_obj.append else offset
        try:
            await self._run(file_obj.upload.write_at, at, data)
        except asyncssh.SFTPError as refusal:  # the upload is aborted (too large, over quota)
            file_obj.refused = refusal
            raise
        return len(data)

    async def fstat(self, file_obj: object) -> asyncssh.SFTPAttrs:
        if isinstance(file_obj, _Reading):
            return _attrs(file_obj.entry)
        if isinstance(file_obj, _Writing):
            now = int(time.time())
            return asyncssh.SFTPAttrs(
                type=asyncssh.FILEXFER_TYPE_REGULAR,
                size=file_obj.upload.size,
                permissions=stat.S_IFREG | 0o644,
                atime=now,
                mtime=now,
                nlink=1,
            )
        raise asyncssh.SFTPInvalidHandle("not a file")

    def fsync(self, file_obj: object) -> None:
        return None  # a commit syncs; until then the file is not there to sync

    async def close(self, file_obj: object) -> None:
        if isinstance(file_obj, _Reading | _Writing):
            self.login.open_files -= 1
        if isinstance(file_obj, _Reading):
            await asyncio.to_thread(file_obj.file.close)
            return
        if not isinstance(file_obj, _Writing):
            return
        self._drop(file_obj)
        if self.login.lost or self.channel.is_closing():  # the session ended mid-upload
            await asyncio.to_thread(file_obj.upload.abort)
            return
        if file_obj.refused is not None:
            await asyncio.to_thread(file_obj.upload.abort)
            raise file_obj.refused
        try:
            await self._run(file_obj.upload.commit)
        finally:
            await asyncio.to_thread(file_obj.upload.abort)  # a no-op after a commit

    def _drop(self, writing: _Writing) -> None:
        self.uploads.discard(writing)

    async def exit(self) -> None:
        """The session is over: uploads never closed are aborted, what the session added
        (or freed) is recorded on the instance's measured usage, and the client is told
        the exit status 0."""
        for writing in list(self.uploads):
            self._drop(writing)
            await asyncio.to_thread(writing.upload.abort)
        try:
            await self.service.record(self.instance, self.files)
        except Exception:  # the next measurement corrects it
            log.exception("the usage of %s was not recorded", self.instance_name)
        if not self.login.lost:  # like sshd: clients such as scp want an exit status
            with contextlib.suppress(OSError):
                self.channel.exit(0)


@dataclass
class SftpServer:
    settings: Settings
    keys: SshKeyService
    files: FileService
    connections: set[_Login] = field(default_factory=set)
    _acceptor: asyncssh.SSHAcceptor | None = None

    @property
    def port(self) -> int | None:
        """The port listened on (PF_SFTP's, or the one picked for port 0); None: off."""
        return self._acceptor.get_port() if self._acceptor is not None else None

    async def start(self) -> None:
        """Listen on PF_SFTP (nothing when it is off). A port that cannot be bound is logged,
        and the control plane goes on without SFTP."""
        listen = self.settings.sftp_listen
        if listen is None:
            return
        host, port = listen
        self.keys.on_removed(self._key_removed)
        try:
            self._acceptor = await asyncssh.listen(
                host,
                port,
                server_factory=lambda: _Login(self),
                server_host_keys=[self.keys.host_key.private],
                sftp_factory=self._session,
                sftp_version=3,
                allow_scp=False,
                allow_pty=False,
                agent_forwarding=False,
                x11_forwarding=False,
                login_timeout=LOGIN_TIMEOUT_S,
                reuse_address=True,
            )
        except OSError as exc:
            log.error("the SFTP server cannot listen on %s: %s", self.settings.sftp, exc)
            return
        log.info("SFTP on %s (host key %s)", self.settings.sftp, self.keys.host_key.fingerprint)

    async def _session(self, chan: asyncssh.SSHServerChannel[bytes]) -> asyncssh.SFTPServer:
        login = chan.get_connection().get_owner()
        assert isinstance(login, _Login)
        grant = await login.current_grant(fresh=True)
        instance = grant.instance
        if instance.disk_bytes is None and disk_limit_mb_of(self.settings, instance):
            instance = await self.files.instances.limits.measure(instance)  # the quota left
        return _InstanceSftp(chan, login, self.files, instance)

    def _key_removed(self, key_id: str) -> None:
        for login in list(self.connections):
            if login.grant is not None and login.grant.key_id == key_id:
                login.close()

    async def close(self) -> None:
        """Stop listening and end every session (their open uploads are aborted)."""
        if self._acceptor is None:
            return
        self._acceptor.close()
        with contextlib.suppress(Exception):
            await self._acceptor.wait_closed()
        self._acceptor = None
        logins = list(self.connections)
        for login in logins:
            login.close()
        waits = [login.conn.wait_closed() for login in logins if login.conn is not None]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*waits, return_exceptions=True), CLOSE_GRACE_S
                )
