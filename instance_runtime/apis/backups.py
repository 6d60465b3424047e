"""`/api/backups`: list, create, upload, download, delete and restore backups (PocketBase 0.40's
`apis/backup*.go`), thin over `core.backups`.

Contract (every route but the download answers 401 to a guest and 403 to a non-superuser):

- `GET /api/backups`: `[{key, size, modified}]` sorted by key; a storage that cannot be listed
  is 400 "Failed to retrieve backup items. Raw error: ...".
- `POST /api/backups` `{name?}`: 400 "Try again later - another backup/restore process has
  already been started." while one runs; a body that does not decode is 400 "An error occurred
  while loading the submitted data."; a `name` longer than 150, not `^[a-z0-9_-]+\\.zip$` or
  already stored is 400 "An error occurred while validating the submitted data." with
  PocketBase's `name` error; the backup is made before the 204 (400 "Failed to create
  backup." when it fails). Without a name: `pb_backup_{app}_{UTC stamp}.zip`.
- `POST /api/backups/upload` (multipart `file`, no body limit, streamed to the temp folder):
  no file part is `validation_required`, content that is not a zip `validation_invalid_mime_type`
  (named by PocketBase's sanitised name), a name already stored `validation_backup_name_exists`,
  each 400 "An error occurred while validating the submitted data."; stored under the file's
  base name, 204.
- `GET|HEAD /api/backups/{key}?token=FILE_TOKEN` (no Authorization needed): 403 "Insufficient
  permissions to access the resource." unless the token is a superuser's file token (and the
  client within `superuserIPs`); then the archive as `filesystem.Serve` sends it (attachment,
  ranges, `apis.file_serve`), 404 for a missing key, 400 for `.`/`..`/`*.attrs`.
- `DELETE /api/backups/{key}`: 400 "The backup is currently being used and cannot be deleted."
  for the one a running operation was named after; 400 "Invalid or already deleted backup
  file. Raw error: ..." when the storage refuses; 204.
- `POST /api/backups/{key}/restore`: 400 "Try again later - ..." while one runs, 400 "Missing
  or invalid backup file." for a key that is not a stored backup, else 204 at once; the restore
  runs in the background (the server holds requests while it swaps the data folder, see
  `core.backups`); a bad archive is refused there and logged, the data stays as it was.
- `{key}` is one path segment of the raw path (`%2F` in it stays part of the key, as in
  PocketBase; an unescaped `/` is another route: 404).

`gate_of(app)` is the `core.restart_gate` every HTTP request passes (the request pipeline's
first step, `apis.middlewares`); `bind(app)` binds `core.backups` and has a restore end the
realtime streams first.
"""

from __future__ import annotations

import asyncio
import logging
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import unquote

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    client_ip,
    get_app,
    json_response,
    read_body,
    require_superuser,
)
from instance_runtime.apis.file_serve import StorageResponse
from instance_runtime.apis.files import _CACHE, _CSP
from instance_runtime.apis.realtime import realtime_of
from instance_runtime.core import auth, files
from instance_runtime.core import backups as service
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, FieldError, bad_request, forbidden, not_found
from instance_runtime.core.request_info import SUPERUSERS
from instance_runtime.core.restart_gate import RestartGate
from instance_runtime.tools.client_ip import ip_in_list
from instance_runtime.tools.cron import _go_quote  # Go's strconv.Quote
from instance_runtime.tools.filesystem import Storage, StorageError

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

log = logging.getLogger("instance_runtime")

PREFIX = "/api/backups"
_BUSY = "Try again later - another backup/restore process has already been started."
_UNREADABLE = "An error occurred while loading the submitted data."
_INVALID = "An error occurred while validating the submitted data."
_NO_ACCESS = "Insufficient permissions to access the resource."
_SNIFF = 3072


def bind(app: App) -> service.Backups:
    """See the module docstring."""
    backups = service.bind(app)
    backups.on_pause(realtime_of(app).close)
    return backups


def gate_of(runtime: App) -> RestartGate:
    """The restart gate every HTTP request passes (`apis.middlewares`, step 0)."""
    return service.backups_of(runtime).gate


def _backups(request: Request) -> service.Backups:
    return service.backups_of(get_app(request))


def _raw_key(request: Request, segments: int) -> str | None:
    """The `{key}` segment of the raw path, decoded, or None when the raw path has another
    number of segments (an unescaped `/` in the key: not this route in PocketBase)."""
    raw: bytes = request.scope.get("raw_path") or request.url.path.encode()
    parts = raw.split(b"?", 1)[0].decode("latin-1").split("/")
    if len(parts) != segments:
        return None
    return unquote(parts[3], errors="surrogateescape")


async def list_backups(request: Request) -> Response:
    await require_superuser(request)
    try:
        found = await asyncio.to_thread(_backups(request).list)
    except StorageError as exc:
        raise bad_request(f"Failed to retrieve backup items. Raw error: \n{exc}") from exc
    return json_response([item.to_json() for item in found])


def _name_error(backups: service.Backups, name: str) -> FieldError | None:
    if not name:
        return None
    if len(name) > 150:
        return FieldError(
            "validation_length_out_of_range",
            "The length must be between {{.min}} and {{.max}}.",
            {"min": 1, "max": 150},
        )
    if not service.NAME_PATTERN.match(name):
        return FieldError("validation_match_invalid", "Must be in a valid format.")
    if backups.name_taken(name):
        return FieldError(
            "validation_backup_name_exists", "The backup file name is invalid or already exists."
        )
    return None


async def create_backup(request: Request) -> Response:
    await require_superuser(request)
    backups = _backups(request)
    if backups.busy:
        raise bad_request(_BUSY)
    body = await read_body(request, message=_UNREADABLE)
    name = body.get("name")
    if name is None:
        name = ""
    if not isinstance(name, str):
        raise ApiError(400, _UNREADABLE)
    error = await asyncio.to_thread(_name_error, backups, name)
    if error is not None:
        raise bad_request(_INVALID, {"name": error})
    try:
        await asyncio.to_thread(backups.create, name)
    except Exception as exc:
        log.warning("Failed to create backup %r: %s", name, exc)
        raise bad_request("Failed to create backup.") from exc
    return Response(status_code=204)


@dataclass
class _Staged:
    name: str  # the base name of the part's filename, as Go's `FileName()`
    path: Path
    head: bytes = b""


def _go_base(name: str) -> str:
    """Go's `filepath.Base` (what `multipart.Part.FileName` keeps of a sent name)."""
    stripped = name.rstrip("/")
    if not stripped:
        return "/" if name else "."
    return posixpath.basename(stripped)


class _FilePart:
    """Streams the first part named `file` with a filename of a multipart body to disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.staged: _Staged | None = None
        self.pending: list[bytes] = []
        self._out: BinaryIO | None = None
        self._writing = False
        self._field = b""
        self._value = b""
        self._headers: dict[bytes, bytes] = {}

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self._headers = {}
        self._writing = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        filename = options.get(b"filename", b"").decode("utf-8", "replace")
        if self.staged is None and options.get(b"name") == b"file" and filename:
            path = self.folder / f"pb_upload_{files.random_part(10)}"
            self._out = open(path, "xb")  # noqa: SIM115 - closed by finish()
            self.staged = _Staged(_go_base(filename), path)
            self._writing = True

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._writing and self.staged is not None:
            chunk = data[start:end]
            if len(self.staged.head) < _SNIFF:
                self.staged.head += chunk[: _SNIFF - len(self.staged.head)]
            self.pending.append(chunk)

    def _end(self) -> None:
        self._writing = False

    def flush(self) -> None:
        """Write what the last chunks carried (blocking: in a thread)."""
        chunks, self.pending = self.pending, []
        if self._out is not None:
            for chunk in chunks:
                self._out.write(chunk)

    def finish(self) -> None:
        self.flush()
        if self._out is not None:
            self._out.close()
            self._out = None

    def discard(self) -> None:
        self.finish()
        if self.staged is not None:
            self.staged.path.unlink(missing_ok=True)


async def _stage_upload(request: Request, folder: Path) -> _Staged | None:
    """The `file` part of a multipart body, streamed to `folder`, or None (no such part, not
    multipart, or malformed: what PocketBase's `FindUploadedFiles` finds then)."""
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        async for _ in request.stream():
            pass
        return None
    part = _FilePart(folder)
    parser = MultipartParser(boundary, part.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if part.pending:
                await asyncio.to_thread(part.flush)
        parser.finalize()
        await asyncio.to_thread(part.finish)
    except MultipartParseError:
        await asyncio.to_thread(part.discard)
        return None
    except BaseException:
        await asyncio.to_thread(part.discard)
        raise
    return part.staged


def _upload_error(backups: service.Backups, staged: _Staged | None) -> FieldError | None:
    if staged is None:
        return FieldError("validation_required", "Cannot be blank.")
    detected = files.detect_mime(staged.head)
    if not files.mime_is(detected, service.ZIP_TYPE):
        shown = files.normalize_name(staged.name, detected)
        message = f'"{shown}" mime type must be one of: {service.ZIP_TYPE}.'
        return FieldError("validation_invalid_mime_type", message)
    if backups.name_taken(staged.name):
        return FieldError(
            "validation_backup_name_exists", "Backup file with the specified name already exists."
        )
    return None


async def upload_backup(request: Request) -> Response:
    await require_superuser(request)
    backups = _backups(request)
    folder = await asyncio.to_thread(backups.temp_dir)
    staged = await _stage_upload(request, folder)
    try:
        error = await asyncio.to_thread(_upload_error, backups, staged)
        if error is not None:
            raise bad_request(_INVALID, {"file": error})
        assert staged is not None
        try:
            await asyncio.to_thread(backups.store, staged.path, staged.name)
        except (StorageError, ValueError) as exc:
            raise bad_request("Failed to upload backup.") from exc
    finally:
        if staged is not None:
            staged.path.unlink(missing_ok=True)
    return Response(status_code=204)


def _sniff(storage: Storage, key: str, size: int) -> str:
    with storage.open(key, 0, min(size, _SNIFF)) as reader:
        return files.detect_mime(reader.read())


async def download_backup(request: Request) -> Response:
    key = _raw_key(request, 4)
    if key is None:
        raise ApiError(404, "File not found.")
    app = get_app(request)
    token = request.query_params.get("token", "")
    found = None
    if token:
        found = await app.read(lambda conn, schema: auth.verify_token(conn, schema, token, "file"))
    if found is None or found[0].name != SUPERUSERS:
        raise forbidden(_NO_ACCESS)
    settings = app.settings.current
    allowed = settings.get("superuserIPs") or []
    if allowed and not ip_in_list(allowed, client_ip(request.scope, settings)):
        raise forbidden(_NO_ACCESS)
    backups = service.backups_of(app)
    try:
        info = await asyncio.to_thread(backups.stat, key)
    except (service.BadKey, StorageError) as exc:
        raise bad_request() from exc
    if info is None:
        raise not_found()
    storage = backups.storage()
    content_type = info.content_type
    if not content_type:
        content_type = await asyncio.to_thread(_sniff, storage, key, info.size)
    headers = {
        "Content-Disposition": f"attachment; filename={_go_quote(posixpath.basename(key))}",
        "Content-Security-Policy": _CSP,
        "Cache-Control": _CACHE,
    }
    return StorageResponse(storage, key, info, content_type, headers)


async def delete_backup(request: Request) -> Response:
    key = _raw_key(request, 4)
    if key is None:
        raise not_found()
    await require_superuser(request)
    backups = _backups(request)
    if key and backups.busy and backups.active == key:
        raise bad_request("The backup is currently being used and cannot be deleted.")
    try:
        await asyncio.to_thread(backups.delete, key)
    except (service.BadKey, service.DeleteError, StorageError) as exc:
        raise bad_request(f"Invalid or already deleted backup file. Raw error: \n{exc}") from exc
    return Response(status_code=204)


async def restore_backup(request: Request) -> Response:
    key = _raw_key(request, 5)
    if key is None:
        raise not_found()
    await require_superuser(request)
    backups = _backups(request)
    if backups.busy:
        raise bad_request(_BUSY)
    if not await asyncio.to_thread(backups.exists, key):
        raise bad_request("Missing or invalid backup file.")
    try:
        backups.start_restore(key)
    except service.BusyError as exc:
        raise bad_request(_BUSY) from exc
    return Response(status_code=204)


routes = [
    Route(PREFIX, list_backups, methods=["GET"]),
    Route(PREFIX, create_backup, methods=["POST"]),
    Route(PREFIX + "/upload", upload_backup, methods=["POST"]),
    Route(PREFIX + "/{key:path}/restore", restore_backup, methods=["POST"]),
    Route(PREFIX + "/{key:path}", download_backup, methods=["GET", "HEAD"]),
    Route(PREFIX + "/{key:path}", delete_backup, methods=["DELETE"]),
]
