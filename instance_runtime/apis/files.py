"""`GET /api/files/{collection}/{recordId}/{filename}` and the staging of record uploads.

Contract (PocketBase's `apis/file.go` and `filesystem.Serve`):

- `await stage_uploads(request)` stages the file parts `read_body` kept (see `core.files.stage`;
  in a thread, chunk by chunk) and returns them by form key; the caller `discard`s them.
- The download answers 404 "Missing or invalid collection context." for an unknown collection,
  "The requested resource wasn't found." for an unknown record or file name (a name not held
  by one of the record's file fields, or missing on disk), and for a `protected` field's file
  unless the collection's `viewRule` lets a guest see the record (file tokens are not
  supported yet). Otherwise the file, streamed, with
  PocketBase's headers: `Content-Disposition: inline|attachment; filename="NAME"` (inline only
  for its list of image/video/audio/pdf types, attachment with `download=1`), the sniffed
  `Content-Type` (extension overrides for svg/css/js/office documents), its
  `Content-Security-Policy`, `Cache-Control: max-age=2592000, stale-while-revalidate=86400`,
  `Last-Modified` and range requests (starlette's `FileResponse`). `thumb` is ignored: the
  original is served, as PocketBase does for a size it does not know.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path
from typing import BinaryIO

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, uploaded_files
from instance_runtime.core import fields as fv
from instance_runtime.core import files
from instance_runtime.core.errors import ApiError
from instance_runtime.core.records import check_rule, find
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema

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


def _sniff(path: Path) -> str:
    with open(path, "rb") as fh:
        return files.detect_mime(fh.read(3072))


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

    def allowed(conn: sqlite3.Connection, schema: Schema) -> bool:
        record = find(conn, coll, rid)
        if record is None:
            return False
        for f in coll.fields:
            if f.type == "file" and name in fv.to_str_list(record.get(f.name)):
                if not f.opt("protected"):
                    return True
                return check_rule(conn, schema, coll, coll.viewRule, rid, RequestInfo())
        return False

    if not await app.read(allowed):
        raise ApiError(404, _NOT_FOUND)
    path = files.find_file(app.data_dir, coll, rid, name)
    if path is None:
        raise ApiError(404, _NOT_FOUND)
    real_type = await asyncio.to_thread(_sniff, path)
    inline = not _truthy(request.query_params.get("download", "")) and real_type in _INLINE
    content_type = _BY_EXTENSION.get(path.suffix, real_type)
    headers = {
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
        "Content-Security-Policy": _CSP,
        "Cache-Control": _CACHE,
    }
    response = _FileResponse(path, headers=headers, media_type=content_type)
    response.headers["content-type"] = content_type  # as sniffed: no charset added
    return response


class _FileResponse(FileResponse):
    def set_stat_headers(self, stat_result: os.stat_result) -> None:
        super().set_stat_headers(stat_result)
        if "etag" in self.headers:  # Go's http.ServeContent sends none
            del self.headers["etag"]


routes = [
    Route("/api/files/{collection}/{recordId}/{filename}", download, methods=["GET", "HEAD"]),
]
