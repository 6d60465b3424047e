"""`GET /api/files/{collection}/{recordId}/{filename}`, `POST /api/files/token` and the staging of
record uploads.

Contract (PocketBase's `apis/file.go` and `filesystem.Serve`):

- `await stage_uploads(request)` stages the file parts `read_body` kept (see `core.files.stage`;
  in a thread, chunk by chunk) and returns them by form key; the caller `discard`s them.
- The download answers 404 "Missing or invalid collection context." for an unknown collection,
  "The requested resource wasn't found." for an unknown record or file name (a name not held
  by one of the record's file fields, or missing from the storage), and for a `protected`
  field's file unless the collection's `viewRule` passes for the requester of its `?token=`
  (a file token; without one, a guest: the Authorization header is not used; see
  `_protected_file_info`). Otherwise the file, streamed, with
  PocketBase's headers: `Content-Disposition: inline|attachment; filename="NAME"` (inline only
  for its list of image/video/audio/pdf types, attachment with `download=1`), the sniffed
  `Content-Type` (extension overrides for svg/css/js/office documents), its
  `Content-Security-Policy`, `Cache-Control: max-age=2592000, stale-while-revalidate=86400`,
  `Last-Modified` and range requests, streamed from the app's storage (local disk or S3, see
  `core.file_storage`) by `apis.file_serve.StorageResponse`. The content type is the one
  stored with the object (S3) or sniffed from its first bytes. A view collection's file is
  served from its source record (`core.view_files.file_owner`), 404 when none holds it.
- `?thumb=SIZE` (`100x100` or a size in the field's `thumbs`) of a png/jpg/gif/webp file serves
  its thumb `thumbs_{name}/{SIZE}_{name}` (made once, see `core.thumbs`), named `SIZE_NAME` in
  `Content-Disposition`; any other size or type, or a thumb that cannot be made, serves the
  original, as PocketBase does.
- `POST /api/files/token` answers `{"token": ...}`, a "file" token of the request's auth record
  (superuser or any auth collection; its duration is the collection's `fileToken.duration`),
  401 without auth.
"""

from __future__ import annotations

import asyncio
import posixpath
import sqlite3
from typing import BinaryIO

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    client_ip,
    get_app,
    json_response,
    request_auth,
    uploaded_files,
)
from instance_runtime.apis.file_serve import StorageResponse
from instance_runtime.core import auth, file_storage, files, thumbs, view_files
from instance_runtime.core import fields as fv
from instance_runtime.core.errors import ApiError, unauthorized
from instance_runtime.core.models import Field
from instance_runtime.core.records import check_rule, find
from instance_runtime.core.request_info import SUPERUSERS, RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.client_ip import ip_in_list
from instance_runtime.tools.filesystem import FileInfo, Storage

_NOT_FOUND = "The requested resource wasn't found."

_INLINE = frozenset(
    {
        "image/png", "image/jpg", "image/jpeg", "image/gif", "image/webp", "image/x-icon",
        "image/bmp", "video/webm", "video/mp4", "video/3gpp", "video/quicktime",
        "video/x-ms-wmv", "audio/basic", "audio/aiff", "audio/mpeg", "audio/midi", "audio/mp3",
        "audio/wave", "audio/wav", "audio/x-wav", "audio/x-mpeg", "audio/x-m4a", "audio/aac",
        "application/pdf", "application/x-pdf",
    }
)  # fmt: skip

_BY_EXTENSION = {
    ".svg": "image/svg+xml",
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
}

_CSP = "default-src 'none'; media-src 'self'; style-src 'unsafe-inline'; sandbox"
_CACHE = "max-age=2592000, stale-while-revalidate=86400"


async def stage_uploads(request: Request) -> files.Staged:
    """See the module docstring."""
    found = uploaded_files(request)
    if not found:
        return {}
    parts: dict[str, list[tuple[str, BinaryIO]]] = {
        key: [(u.filename or "", u.file) for u in uploads] for key, uploads in found.items()
    }
    return await asyncio.to_thread(files.stage, get_app(request).data_dir, parts)


def _stat_and_sniff(storage: Storage, key: str) -> tuple[FileInfo, str] | None:
    info = storage.stat(key)
    if info is None:
        return None
    if info.content_type:
        return info, info.content_type
    try:
        with storage.open(key, 0, min(info.size, 3072)) as reader:
            return info, files.detect_mime(reader.read())
    except FileNotFoundError:
        return None


def _truthy(raw: str) -> bool:
    return raw.strip().lower() in ("1", "t", "true")


async def download(request: Request) -> Response:
    app = get_app(request)
    coll = app.schema.find(request.path_params["collection"])
    rid = str(request.path_params["recordId"])
    name = str(request.path_params["filename"])
    if coll is None:
        raise ApiError(404, "Missing or invalid collection context.")
    if not rid:
        raise ApiError(404, _NOT_FOUND)

    def allowed(conn: sqlite3.Connection, schema: Schema) -> Field | None:
        record = find(conn, coll, rid)
        if record is None:
            return None
        for f in coll.fields:
            if f.type == "file" and name in fv.to_str_list(record.get(f.name)):
                if not f.opt("protected"):
                    return f
                info = _protected_file_info(conn, schema, request)
                return f if check_rule(conn, schema, coll, coll.viewRule, rid, info) else None
        return None

    file_field = await app.read(allowed)
    if file_field is None:
        raise ApiError(404, _NOT_FOUND)
    key = files.file_key(*await view_files.file_owner(app, coll, rid, name), name)  # views: source
    storage = file_storage.storage_of(app).get()
    found = await asyncio.to_thread(_stat_and_sniff, storage, key) if key else None
    if key is None or found is None:
        raise ApiError(404, _NOT_FOUND)
    info, real_type = found
    size = thumbs.served_size(request.query_params.get("thumb", ""), file_field.opt("thumbs") or [])
    if size is not None and real_type in thumbs.THUMBABLE:
        made = await thumbs.of(app).ensure(storage, key, size, real_type)
        thumb = await asyncio.to_thread(_stat_and_sniff, storage, made) if made else None
        if made is not None and thumb is not None:  # else the original, as PocketBase
            key, name, (info, real_type) = made, f"{size}_{name}", thumb
    inline = not _truthy(request.query_params.get("download", "")) and real_type in _INLINE
    content_type = _BY_EXTENSION.get(posixpath.splitext(name)[1], real_type)
    headers = {
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
        "Content-Security-Policy": _CSP,
        "Cache-Control": _CACHE,
    }
    return StorageResponse(storage, key, info, content_type, headers)


def _protected_file_info(conn: sqlite3.Connection, schema: Schema, request: Request) -> RequestInfo:
    """The requester a protected file's `viewRule` sees (PocketBase's `download`): the request
    as it came in the `protectedFile` context, authenticated by its `?token=` file token only
    (its Authorization header is not used); a superuser's token from outside
    `superuserIPs` counts as no token."""
    info = RequestInfo(
        method=request.method.upper(),
        context="protectedFile",
        query=dict(request.query_params),
        headers={k.lower().replace("-", "_"): v for k, v in request.headers.items()},
    )
    token = request.query_params.get("token", "")
    found = auth.verify_token(conn, schema, token, "file") if token else None
    if found is None:
        return info
    token_coll, record = found
    settings = get_app(request).settings.current
    allowed_ips = settings.get("superuserIPs") or []
    outside = bool(allowed_ips) and not ip_in_list(allowed_ips, client_ip(request.scope, settings))
    if token_coll.name == SUPERUSERS and outside:
        return info
    info.auth = {**record, "collectionId": token_coll.id, "collectionName": token_coll.name}
    info.auth_collection = token_coll
    return info


async def file_token(request: Request) -> Response:
    """`POST /api/files/token`: a short-lived "file" token of the request's auth record."""
    found = await request_auth(request, get_app(request))
    if found is None:
        raise unauthorized()
    coll, record = found
    return json_response({"token": auth.new_token(coll, record, "file")})


routes = [
    Route("/api/files/token", file_token, methods=["POST"]),
    Route("/api/files/{collection}/{recordId}/{filename}", download, methods=["GET", "HEAD"]),
]
