"""The files of an instance's code folders, `pb_hooks/`, `pb_migrations/` and `pb_public/`,
for its owner and operators (issue 14). A `PATH` is relative to the instance's folder and lies
in one of the three (`pb_public/assets/app.js`; see `control_plane.files.rules`).

- `GET /api/instances/{name}/files?path=DIR`: the folders and files in `DIR` (no `path`: the
  code folders present);
- `GET /api/instances/{name}/files/{path}`: the file's bytes (`application/octet-stream`, as an
  attachment: the API's host never renders a tenant's page);
- `PUT /api/instances/{name}/files/{path}`: the raw body becomes the file, atomically (201 new,
  200 replaced); missing folders on the way are created. The body may be as large as
  `PF_FILES_MAX_FILE_MB` (the apex's `PF_MAX_BODY_BYTES` does not apply) and is streamed to
  disk, never held whole;
- `DELETE /api/instances/{name}/files/{path}[?recursive=true]`: a file, or a folder (empty
  unless `recursive`), 204;
- `POST /api/instances/{name}/files/{path}/move` `{"to": PATH}`: move or rename;
- `POST /api/instances/{name}/folders/{path}`: a new folder (and those on the way), 201.

Another account's instance is 404 on every route. Refusals: 404 (no such instance or entry),
409 (a folder where a file is meant or the reverse, a folder not empty, something already
there, the instance busy), 413 (a file over its limit), 422 (a path the rules refuse, a link
or special file), 507 (the disk quota or the number of files reached).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from control_plane.api.body_limit import BodyLimitOverride
from control_plane.api.deps import CP, CurrentAccount
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.files.rules import MAX_PATH_LENGTH
from control_plane.files.schemas import FileEntryPublic, FileMove
from control_plane.files.service import download_headers, read_chunks
from control_plane.limits import MB
from control_plane.services.errors import BadRequest
from control_plane.settings import Settings

# 403: a suspended account
router = api_router("files", 401, 403, 404)

FILE = "/api/instances/{name}/files/{path:path}"
# the request paths of uploads: their body limit is PF_FILES_MAX_FILE_MB (see `upload_limit`)
UPLOAD_PATH = re.compile(r"^/api/instances/[^/]+/files/.")

FilePath = Annotated[
    str, Path(description="in pb_hooks/, pb_migrations/ or pb_public/: pb_public/index.html")
]
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ENTRY = {"model": FileEntryPublic}


def upload_limit(settings: Settings) -> BodyLimitOverride:
    """The body limit of uploads, for the apex's `BodyLimitMiddleware`."""
    return BodyLimitOverride("PUT", UPLOAD_PATH, settings.files_max_file_mb * MB)


@router.get("/api/instances/{name}/files", responses=error_responses(409))
async def list_files(
    cp: CP,
    account: CurrentAccount,
    name: str,
    path: Annotated[
        str, Query(max_length=MAX_PATH_LENGTH, description="a folder; empty: the code folders")
    ] = "",
) -> list[FileEntryPublic]:
    """The folders and regular files of a folder, by name (links and special files are left
    out)."""
    return [FileEntryPublic.of(entry) for entry in await cp.files.list(account, name, path)]


@router.get(
    FILE,
    response_class=Response,
    responses={
        200: {"content": {"application/octet-stream": _BINARY}, "description": "the bytes"},
        **error_responses(409),
    },
)
async def read_file(cp: CP, account: CurrentAccount, name: str, path: FilePath) -> Response:
    """The file's bytes as they were when it was opened."""
    entry, stream = await cp.files.read(account, name, path)
    return StreamingResponse(
        read_chunks(stream, entry.size),
        media_type="application/octet-stream",
        headers=download_headers(entry),
    )


@router.put(
    FILE,
    responses={201: {**_ENTRY, "description": "created"}, **error_responses(409, 507)},
    openapi_extra={
        "requestBody": {
            "description": "the file's new content, as it is (any type)",
            "content": {"application/octet-stream": _BINARY},
        }
    },
)
async def write_file(
    cp: CP, account: CurrentAccount, name: str, path: FilePath, request: Request, response: Response
) -> FileEntryPublic:
    """Write the body to the file (200 replaced, 201 new), atomically: readers see the old
    file or the new one. A running instance keeps running (PocketBase reloads hooks itself)."""
    try:
        entry, created = await cp.files.write(account, name, path, request.stream())
    except ClientDisconnect:
        raise BadRequest("the upload was cut off before its end") from None
    if created:
        response.status_code = status.HTTP_201_CREATED
    return FileEntryPublic.of(entry)


@router.delete(FILE, status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(409))
async def delete_file(
    cp: CP,
    account: CurrentAccount,
    name: str,
    path: FilePath,
    recursive: Annotated[bool, Query(description="delete a folder and what it holds")] = False,
) -> Response:
    """Delete a file, or a folder (empty unless `recursive`); never a code folder itself."""
    await cp.files.delete(account, name, path, recursive=recursive)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(f"{FILE}/move", responses=error_responses(409, 507))
async def move_file(
    cp: CP, account: CurrentAccount, name: str, path: FilePath, data: FileMove
) -> FileEntryPublic:
    """Move (rename) a file or folder within the code folders."""
    return FileEntryPublic.of(await cp.files.move(account, name, path, data.to))


@router.post(
    "/api/instances/{name}/folders/{path:path}",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, 507),
)
async def make_folder(
    cp: CP, account: CurrentAccount, name: str, path: FilePath
) -> FileEntryPublic:
    """Create a folder and the missing ones on the way; 409 when something is there."""
    return FileEntryPublic.of(await cp.files.mkdir(account, name, path))
