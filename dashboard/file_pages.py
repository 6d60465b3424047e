"""The file browser of an instance's `pb_hooks/`, `pb_migrations/` and `pb_public/` (over
`FileService`, never the HTTP API):

- `GET /instances/{name}/files?path=DIR`: breadcrumbs, the folder's listing (folders first),
  forms to upload into it, make a folder, rename and delete entries; the SFTP line;
- `GET /instances/{name}/files/download?path=FILE`: the bytes, as an attachment never
  rendered on the dashboard's origin;
- `GET|POST /instances/{name}/files/edit?path=FILE`: a text editor for UTF-8 files of at most
  `EDIT_MAX_BYTES`, saved atomically;
- `POST /instances/{name}/files/upload|mkdir|rename|delete`: the forms' actions.

A refusal of the service (a traversal, `pb_data`, over quota...) is shown on the folder's
page (or the editor) with its status; another account's instance is 404 everywhere.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette.datastructures import UploadFile
from starlette.requests import ClientDisconnect

from control_plane.api.body_limit import BodyLimitOverride
from control_plane.files.service import download_headers, read_chunks
from control_plane.limits import MB
from control_plane.services.errors import BadRequest, Invalid, ServiceError
from control_plane.settings import Settings
from dashboard.file_views import (
    EDIT_MAX_BYTES,
    crumbs_of,
    entry_views,
    parent_of,
    sftp_line,
    text_of,
)
from dashboard.views import instance_view
from dashboard.web import PageRoute, checked_form, cp_of, redirect, render, require_viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)

UPLOAD_CHUNK = 1 << 20
FORM_SLACK = 64 * 1024  # a form's own bytes around its files or text (boundaries, fields)

# Messages after a redirect (`?done=KEY`), a fixed set as `dashboard.web.NOTICES` is.
DONE = {
    "uploaded": "Uploaded.",
    "folder_made": "Folder created.",
    "renamed": "Renamed.",
    "deleted": "Deleted.",
    "saved": "Saved.",
}


def body_limits(settings: Settings) -> list[BodyLimitOverride]:
    """The apex's body limits of the browser's uploads (`PF_FILES_MAX_FILE_MB`) and of the
    editor's saves (`EDIT_MAX_BYTES`, URL-encoded: up to 3 bytes per byte)."""
    return [
        BodyLimitOverride(
            "POST",
            re.compile(r"^/instances/[^/]+/files/upload$"),
            settings.files_max_file_mb * MB + FORM_SLACK,
        ),
        BodyLimitOverride(
            "POST", re.compile(r"^/instances/[^/]+/files/edit$"), 3 * EDIT_MAX_BYTES + FORM_SLACK
        ),
    ]


def _files_url(name: str, folder: str, done: str | None = None) -> str:
    query = {"path": folder} if folder else {}
    if done:
        query["done"] = done
    return f"/instances/{name}/files" + (f"?{urlencode(query)}" if query else "")


def _joined(folder: str, name: str) -> str:
    return f"{folder}/{name}" if folder else name


async def show_files(
    request: Request,
    name: str,
    folder: str,
    *,
    error: str | None = None,
    status: int = 200,
) -> Response:
    """The listing of `folder`; with `error` after a refused action. A folder that cannot be
    listed shows the instance's root with the refusal."""
    viewer = await require_viewer(request)
    cp = cp_of(request)
    row = await cp.instances.get(viewer.account, name)  # 404 for another account's
    try:
        entries = await cp.files.list(viewer.account, name, folder)
    except ServiceError as exc:
        if error is None:
            error, status = exc.message[:1].upper() + exc.message[1:], exc.status
        folder = ""
        entries = await cp.files.list(viewer.account, name, folder)
    return render(
        request,
        "files.html",
        status,
        instance=instance_view(cp.settings, row),
        folder=folder,
        parent=parent_of(folder),
        crumbs=crumbs_of(folder),
        entries=entry_views(entries),
        sftp=sftp_line(request, name),
        error=error,
        done=DONE.get(request.query_params.get("done", "")),
        max_file_mb=cp.settings.files_max_file_mb,
    )


@router.get("/instances/{name}/files")
async def files_page(request: Request, name: str) -> Response:
    return await show_files(request, name, request.query_params.get("path", "").strip("/"))


@router.get("/instances/{name}/files/download")
async def download(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    path = request.query_params.get("path", "")
    try:
        entry, stream = await cp_of(request).files.read(viewer.account, name, path)
    except ServiceError as exc:
        return await show_files(
            request, name, parent_of(path), error=exc.message, status=exc.status
        )
    return StreamingResponse(
        read_chunks(stream, entry.size),
        media_type="application/octet-stream",
        headers=download_headers(entry),
    )


# ----- the forms of the listing


async def _refused(request: Request, name: str, folder: str, exc: ServiceError) -> Response:
    message = exc.message[:1].upper() + exc.message[1:]
    return await show_files(request, name, folder, error=message, status=exc.status)


async def _pieces(upload: UploadFile) -> AsyncIterator[bytes]:
    while piece := await upload.read(UPLOAD_CHUNK):
        yield piece


def _upload_name(filename: str) -> str:
    """The file's own name as the browser sent it (some send a path: its last part)."""
    return re.split(r"[/\\]", filename)[-1]


@router.post("/instances/{name}/files/upload")
async def upload(request: Request, name: str) -> Response:
    """One or more files (`files`, multipart) into the folder `path`; each is written
    atomically, and those before a refused one stay written."""
    viewer = await require_viewer(request)
    try:
        fields = await checked_form(request)
        form = await request.form()  # parsed once: the same form, with its files
    except ClientDisconnect:
        raise BadRequest("the upload was cut off before its end") from None
    folder = fields.get("path", "").strip("/")
    try:
        uploads = [
            item for item in form.getlist("files") if isinstance(item, UploadFile) and item.filename
        ]
        if not uploads:
            raise Invalid("choose one or more files to upload")
        for item in uploads:
            target = _joined(folder, _upload_name(item.filename or ""))
            await cp_of(request).files.write(viewer.account, name, target, _pieces(item))
    except ServiceError as exc:
        return await _refused(request, name, folder, exc)
    finally:
        await form.close()
    return redirect(_files_url(name, folder, "uploaded"))


@router.post("/instances/{name}/files/mkdir")
async def make_folder(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    fields = await checked_form(request)
    folder = fields.get("path", "").strip("/")
    new = fields.get("folder", "").strip()
    try:
        if not new:
            raise Invalid("give the new folder a name")
        await cp_of(request).files.mkdir(viewer.account, name, _joined(folder, new))
    except ServiceError as exc:
        return await _refused(request, name, folder, exc)
    return redirect(_files_url(name, folder, "folder_made"))


@router.post("/instances/{name}/files/rename")
async def rename(request: Request, name: str) -> Response:
    """`path` gets the name `to` in its folder (or, with a `/` in `to`, moves to that path
    from the instance's folder: `pb_public/old/index.html`)."""
    viewer = await require_viewer(request)
    fields = await checked_form(request)
    path = fields.get("path", "").strip("/")
    folder = parent_of(path)
    to = fields.get("to", "").strip()
    try:
        if not to:
            raise Invalid("give the new name")
        target = to.strip("/") if "/" in to else _joined(folder, to)
        await cp_of(request).files.move(viewer.account, name, path, target)
    except ServiceError as exc:
        return await _refused(request, name, folder, exc)
    return redirect(_files_url(name, folder, "renamed"))


@router.post("/instances/{name}/files/delete")
async def delete(request: Request, name: str) -> Response:
    """A file, or a folder with all it holds (the form asks first)."""
    viewer = await require_viewer(request)
    fields = await checked_form(request)
    path = fields.get("path", "").strip("/")
    folder = parent_of(path)
    try:
        await cp_of(request).files.delete(viewer.account, name, path, recursive=True)
    except ServiceError as exc:
        return await _refused(request, name, folder, exc)
    return redirect(_files_url(name, folder, "deleted"))


# ----- the text editor


async def show_editor(
    request: Request,
    name: str,
    path: str,
    *,
    error: str | None = None,
    typed: str | None = None,
    status: int = 200,
) -> Response:
    """The editor of `path`; a binary file or one over `EDIT_MAX_BYTES` is refused with a
    message (and its download link), a refused save shows the text as typed."""
    viewer = await require_viewer(request)
    cp = cp_of(request)
    row = await cp.instances.get(viewer.account, name)
    try:
        entry, stream = await cp.files.read(viewer.account, name, path)
    except ServiceError as exc:
        return await _refused(request, name, parent_of(path), exc)
    text: str | None = None
    refusal: str | None = None
    with stream:
        if entry.size > EDIT_MAX_BYTES:
            refusal = (
                f"This file is too large to edit here ({entry.size} bytes; at most "
                f"{EDIT_MAX_BYTES // MB} MB): download it, or upload a new version."
            )
        else:
            text = text_of(await asyncio.to_thread(stream.read, EDIT_MAX_BYTES + 1))
            if text is None:
                refusal = "This is not a text file (it is not UTF-8): it cannot be edited here."
    return render(
        request,
        "file_edit.html",
        status if refusal is None else 422,
        instance=instance_view(cp.settings, row),
        file_path=entry.path,
        file_name=entry.name,
        folder=parent_of(entry.path),
        crumbs=crumbs_of(entry.path),
        size=entry.size,
        modified=entry.modified,
        text=typed if typed is not None else text,
        crlf=text is not None and "\r\n" in text,
        refusal=refusal,
        error=error,
        done=DONE.get(request.query_params.get("done", "")),
    )


@router.get("/instances/{name}/files/edit")
async def edit_page(request: Request, name: str) -> Response:
    return await show_editor(request, name, request.query_params.get("path", "").strip("/"))


@router.post("/instances/{name}/files/edit")
async def save(request: Request, name: str) -> Response:
    """The textarea's text becomes the file, atomically (browsers send its lines ended with
    CRLF: back to LF unless the file had CRLF)."""
    viewer = await require_viewer(request)
    fields = await checked_form(request)
    path = fields.get("path", "").strip("/")
    text = fields.get("content", "")
    if fields.get("newline") != "crlf":
        text = text.replace("\r\n", "\n")
    content = text.encode("utf-8")

    async def body() -> AsyncIterator[bytes]:
        yield content

    try:
        if len(content) > EDIT_MAX_BYTES:
            raise Invalid(f"the text is over {EDIT_MAX_BYTES // MB} MB: upload it as a file")
        await cp_of(request).files.write(viewer.account, name, path, body())
    except ServiceError as exc:
        message = exc.message[:1].upper() + exc.message[1:]
        return await show_editor(request, name, path, error=message, typed=text, status=exc.status)
    return redirect(f"/instances/{name}/files/edit?{urlencode({'path': path, 'done': 'saved'})}")
