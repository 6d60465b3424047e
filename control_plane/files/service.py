"""The files of an instance's code folders for its owner (or an operator): `FileService`.

- Access: the instance is found with `InstanceService.get`, so another account's instance is
  404 (never 403) and operators reach every instance.
- Limits: `PF_FILES_MAX_FILE_MB` per file, `PF_FILES_MAX_FILES` files and folders in the three
  folders together, and the disk quota (`control_plane.limits`): what the instance may still
  add is its quota less its last measured usage (`Instance.disk_bytes`; measured now when it
  never was; a measurement that stopped at its bounds leaves nothing). What a write adds (or
  a delete frees) is added to `disk_bytes` at once, so the next request counts it before the
  next sweep measures the folder again.
- Writes wait while an exclusive operation holds the instance (a restore rewriting its
  folder), and are refused while it is being deleted. A running PocketBase is not restarted:
  it serves `pb_public` as it is and reloads its hooks by itself.
- Refusals of `control_plane.files.tree` become the API's (`FileRefused.status`: 404, 409,
  413, 422, 507); the blocking work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import BinaryIO, TypeVar
from urllib.parse import quote

from sqlalchemy import case, update
from sqlmodel import col

from control_plane.db.models import Account, Instance
from control_plane.files.errors import FileRefused
from control_plane.files.tree import FileEntry, FileLimits, InstanceFiles, Upload, entry_of
from control_plane.lifecycle import InstanceState
from control_plane.limits import MB, disk_limit_mb_of
from control_plane.services.errors import (
    BadRequest,
    Conflict,
    Invalid,
    NotFound,
    ServiceError,
)
from control_plane.services.instances import InstanceService
from control_plane.settings import Settings
from control_plane.specs import instance_layout

T = TypeVar("T")
WRITE_CHUNK = 1 << 20  # bytes of an upload gathered before one write in a worker thread
READ_CHUNK = 1 << 16


class FileTooLarge(ServiceError):
    status = 413
    code = "too_large"


class InsufficientStorage(ServiceError):
    """507: the disk quota, the number of files or the disk itself is full."""

    status = 507
    code = "over_quota"


_BY_STATUS: dict[int, type[ServiceError]] = {
    404: NotFound,
    409: Conflict,
    413: FileTooLarge,
    422: Invalid,
    507: InsufficientStorage,
}


def service_error(refused: FileRefused) -> ServiceError:
    """`refused` as the API's refusal (a 422 names `path` unless it names another field)."""
    kind = _BY_STATUS.get(refused.status, BadRequest)
    field = refused.field or ("path" if refused.status == 422 else None)
    return kind(refused.message, field=field)


async def _off_loop(work: Callable[..., T], *args: object) -> T:
    try:
        return await asyncio.to_thread(work, *args)
    except FileRefused as refused:
        raise service_error(refused) from None


class FileService:
    def __init__(self, settings: Settings, instances: InstanceService) -> None:
        self.settings = settings
        self.instances = instances

    # ----- an instance's tree

    def uid_of(self, instance: Instance) -> int:
        """The uid the instance's files belong to (ours when instances run as ourselves)."""
        if os.geteuid() == 0 and self.settings.instance_users and instance.uid is not None:
            return instance.uid
        return os.geteuid()

    def limits_of(self, instance: Instance) -> FileLimits:
        """The limits of `instance` now (its quota left from its last measurement)."""
        quota: int | None = None
        limit_mb = disk_limit_mb_of(self.settings, instance)
        if limit_mb is not None:
            used = instance.disk_bytes or 0
            quota = 0 if instance.disk_complete is False else max(0, limit_mb * MB - used)
        return FileLimits(
            max_file_bytes=self.settings.files_max_file_mb * MB,
            max_files=self.settings.files_max_files,
            quota_bytes=quota,
        )

    def files_for(self, instance: Instance) -> InstanceFiles:
        """The code folders of `instance` (the caller has checked who may touch them)."""
        root = instance_layout(self.settings, instance.id).root
        return InstanceFiles(root, self.uid_of(instance), self.limits_of(instance))

    async def open(
        self, account: Account, name: str, *, writing: bool = False
    ) -> tuple[Instance, InstanceFiles]:
        """`account`'s instance `name` (any instance for an operator) and its tree; for
        `writing`, refused while the instance is held or deleted, and measured when it never
        was."""
        instance = await self.instances.get(account, name)
        if writing:
            if instance.status == InstanceState.DELETING:
                raise Conflict(f"{name} is being deleted")
            if instance.hold is not None:
                raise Conflict(f"{name} is busy ({instance.hold}); try again once it is done")
            if instance.disk_bytes is None and disk_limit_mb_of(self.settings, instance):
                instance = await self.instances.limits.measure(instance)
        return instance, self.files_for(instance)

    async def record(self, instance: Instance, files: InstanceFiles) -> None:
        """Add what `files` added (or freed) since the last `record` to the instance's
        measured usage."""
        delta = files.take_unrecorded()
        if not delta:
            return
        grown = col(Instance.disk_bytes) + delta
        async with self.instances.db() as session:
            await session.exec(
                update(Instance)
                .where(col(Instance.id) == instance.id, col(Instance.disk_bytes).is_not(None))
                .values(disk_bytes=case((grown < 0, 0), else_=grown))
            )
            await session.commit()

    # ----- operations

    async def list(self, account: Account, name: str, path: str) -> list[FileEntry]:
        _, files = await self.open(account, name)
        return await _off_loop(files.list, path)

    async def read(self, account: Account, name: str, path: str) -> tuple[FileEntry, BinaryIO]:
        """The file `path`, open (the caller closes it), and its entry as opened."""
        _, files = await self.open(account, name)
        stream = await _off_loop(files.open_read, path)
        try:
            info = os.fstat(stream.fileno())
        except BaseException:
            stream.close()
            raise
        return entry_of(files.normalized(path), info), stream

    async def write(
        self, account: Account, name: str, path: str, body: AsyncIterable[bytes]
    ) -> tuple[FileEntry, bool]:
        """Write `body` (read piece by piece, never whole) to the file `path`, atomically;
        the entry, and whether the file is new (False: it replaced one)."""
        instance, files = await self.open(account, name, writing=True)
        upload: Upload = await _off_loop(files.open_upload, path)
        try:
            offset = 0
            pending = bytearray()
            async for piece in body:
                pending += piece
                if len(pending) >= WRITE_CHUNK:
                    await _off_loop(upload.write_at, offset, bytes(pending))
                    offset += len(pending)
                    pending.clear()
            if pending:
                await _off_loop(upload.write_at, offset, bytes(pending))
            entry = await _off_loop(upload.commit)
        except BaseException:
            upload.abort()  # waits for a write still running in its thread
            raise
        finally:
            await self.record(instance, files)
        return entry, not upload.replaced

    async def mkdir(self, account: Account, name: str, path: str) -> FileEntry:
        _, files = await self.open(account, name, writing=True)
        return await _off_loop(files.mkdir, path)

    async def delete(self, account: Account, name: str, path: str, *, recursive: bool) -> None:
        instance, files = await self.open(account, name, writing=True)
        try:
            await _off_loop(lambda: files.delete(path, recursive=recursive))
        finally:
            await self.record(instance, files)

    async def move(self, account: Account, name: str, path: str, to: str) -> FileEntry:
        instance, files = await self.open(account, name, writing=True)
        try:
            return await _off_loop(files.move, path, to)
        finally:
            await self.record(instance, files)


async def read_chunks(stream: BinaryIO, size: int) -> AsyncIterator[bytes]:
    """The first `size` bytes of `stream` (what it held when opened), piece by piece, read
    in a worker thread; `stream` is closed at the end (or when the reader goes away)."""
    try:
        left = size
        while left > 0:
            piece = await asyncio.to_thread(stream.read, min(READ_CHUNK, left))
            if not piece:
                return
            left -= len(piece)
            yield piece
    finally:
        stream.close()


def download_headers(entry: FileEntry) -> dict[str, str]:
    """The headers of a file sent to a browser (the files API, the dashboard): an attachment
    it never renders on the platform's origin, whatever the tenant put in it."""
    return {
        "Content-Length": str(entry.size),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(entry.name, safe='')}",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "no-store",
        "Last-Modified": entry.modified.strftime("%a, %d %b %Y %H:%M:%S GMT"),
    }
