"""`POST /api/batch`: transactional record writes, with file uploads.

Contract (as PocketBase 0.40): refused with 403 unless `settings.batch.enabled`; the body
is `{"requests": [{method, url, body?, headers?}]}` (at most `batch.maxRequests`), each a record
create (`POST .../records`), upsert (`PUT .../records`), update (`PATCH .../records/ID`) or
delete (`DELETE .../records/ID`). All run in ONE write transaction with the caller's auth and
context `batch`: the answer is `[{"body", "status"}]` (PocketBase's key order), or, when one
fails, nothing is written and the answer is 400 "Batch transaction failed." naming the failed
request's index.

Files: a multipart/form-data batch carries the requests as JSON in `@jsonPayload` and each
request's files under `requests.N.KEY` or `requests[N].KEY` (KEY a file field, `+field` or
`field+`, as the SDK's `createBatch()` sends them; keys of other indexes are ignored). A
request's files replace the body value of the same KEY (PocketBase rebuilds each request as a
multipart form of its own), and they are named as PocketBase names them in a batch: the
sanitised name is sanitised once more, so a stored name has two random parts and refusals
quote the once-sanitised name. Every request's files are staged before the transaction and
placed inside it (`core.files.write_record`); when the batch fails, or its commit does, the
files placed by its earlier requests are deleted again, and the staged files are always
discarded.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, urlsplit

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    get_app,
    json_response,
    read_body,
    request_info,
    uploaded_files,
)
from instance_runtime.apis.records import enrich
from instance_runtime.core import files, record_write, records
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.errors import ApiError, FieldError, ValidationErrors, bad_request
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema

_RECORDS = re.compile(r"^/api/collections/(?P<collection>[^/?]+)/records(?:/(?P<id>[^/?]+))?$")
_FILE_KEY = re.compile(r"^requests(?:\.(?P<dot>\d+)\.|\[(?P<bracket>\d+)\]\.)(?P<key>.*)$", re.S)

Parts = dict[str, list[tuple[str, BinaryIO]]]


def _parts_by_request(found: dict[str, list[UploadFile]], count: int) -> list[Parts]:
    """The uploaded files of each of `count` requests, by their key within the request."""
    out: list[Parts] = [{} for _ in range(count)]
    for form_key, uploads in found.items():
        match = _FILE_KEY.match(form_key)
        if match is None:
            continue
        index = match.group("dot") or match.group("bracket") or ""
        if str(int(index)) != index or int(index) >= count:  # "requests.01." is no prefix
            continue
        parts = out[int(index)].setdefault(match.group("key"), [])
        parts.extend((u.filename or "", u.file) for u in uploads)
    return out


def _stage_all(data_dir: Path, parts: list[Parts]) -> list[files.Staged]:
    """Stage every request's files (blocking); on a failure, nothing staged is left."""
    staged: list[files.Staged] = []
    try:
        for request_parts in parts:
            one = files.stage(data_dir, request_parts) if request_parts else {}
            staged.append(one)
            for uploads in one.values():
                for upload in uploads:  # named twice, as PocketBase's re-encoded request does
                    upload.original_name = upload.name
                    upload.name = files.normalize_name(upload.name, upload.mime)
    except BaseException:
        _discard(staged)
        raise
    return staged


def _discard(staged: list[files.Staged]) -> None:
    for one in staged:
        files.discard(one)


def _unplace(staged: list[files.Staged]) -> None:
    """Delete every file the batch placed (it was rolled back)."""
    uploads = [u for one in staged for group in one.values() for u in group]
    files.unplace(files.Prepared({}, uploads))


def _run_one(
    conn: sqlite3.Connection,
    schema: Schema,
    item: dict[str, Any],
    base: RequestInfo,
    hooks: AppHooks,
    staged: files.Staged,
) -> dict[str, Any]:
    method = str(item.get("method") or "").upper()
    url = urlsplit(str(item.get("url") or ""))
    match = _RECORDS.match(url.path)
    if not match:
        raise ApiError(400, "Something went wrong while processing your request.")
    coll = schema.find(match.group("collection"))
    if coll is None:
        raise ApiError(404, "Missing collection context.")
    given = item.get("body")
    body = {k: v for k, v in given.items() if k not in staged} if isinstance(given, dict) else {}
    info = RequestInfo(
        method=method,
        context="batch",
        query=dict(parse_qsl(url.query)),
        headers=base.headers,
        body=body,
        auth=base.auth,
        auth_collection=base.auth_collection,
    )

    def create() -> Record:
        def write(data: dict[str, Any], errors: ValidationErrors) -> Record:
            return record_write.create(
                conn, schema, coll, data, info, hooks=hooks, file_errors=errors
            )

        return files.write_record(conn, coll, None, body, staged, write)

    def update(record_id: str, old: Record | None) -> Record:
        def write(data: dict[str, Any], errors: ValidationErrors) -> Record:
            return record_write.update(
                conn, schema, coll, record_id, data, info, hooks=hooks, file_errors=errors
            )

        return files.write_record(conn, coll, old, body, staged, write)

    rid = match.group("id")
    if method == "POST" and rid is None:
        record = create()
    elif method == "PUT" and rid is None:
        existing_id = str(body.get("id") or "")
        existing = records.find(conn, coll, existing_id) if existing_id else None
        record = update(existing_id, existing) if existing is not None else create()
    elif method == "PATCH" and rid is not None:
        record = update(rid, records.find(conn, coll, rid))
    elif method == "DELETE" and rid is not None:
        record_write.delete(conn, schema, coll, rid, info, hooks=hooks)
        return {"body": None, "status": 204}
    else:
        raise ApiError(400, "Something went wrong while processing your request.")
    return {"body": enrich(conn, schema, coll, [record], info)[0], "status": 200}


def _failed(index: int, exc: ApiError) -> ApiError:
    return ApiError(
        400,
        "Batch transaction failed.",
        {
            "requests": {
                str(index): {
                    "code": "batch_request_failed",
                    "message": "Batch request failed.",
                    "response": exc.to_json(),
                }
            }
        },
    )


async def batch(request: Request) -> Response:
    app = get_app(request)
    config = app.settings.current["batch"]
    max_requests = int(config.get("maxRequests") or 0)
    if not config.get("enabled") or max_requests <= 0:
        raise ApiError(403, "Batch requests are not allowed.")
    limit = int(config.get("maxBodySize") or 0) or (128 << 20)
    body = await read_body(request, limit, message="Failed to read the submitted batch data.")
    info = await request_info(request, app, body)
    items = body.get("requests")
    if not isinstance(items, list) or not items:
        raise bad_request(
            "Invalid batch request data.",
            {"requests": FieldError("validation_required", "Cannot be blank.")},
        )
    if len(items) > max_requests:
        raise bad_request(
            "Invalid batch request data.",
            {
                "requests": FieldError(
                    "validation_length_too_long",
                    "The length must be no more than {{.max}}.",
                    {"max": max_requests, "min": 0},
                )
            },
        )
    parts = _parts_by_request(uploaded_files(request), len(items))
    staged = await asyncio.to_thread(_stage_all, app.data_dir, parts) if any(parts) else []
    staged += [{}] * (len(items) - len(staged))

    def run(conn: sqlite3.Connection, schema: Schema) -> list[dict[str, Any]]:
        results = []
        try:
            for index, item in enumerate(items):
                try:
                    if not isinstance(item, dict):
                        raise ApiError(400, "Invalid batch request data.")
                    results.append(_run_one(conn, schema, item, info, app.hooks, staged[index]))
                except ApiError as exc:
                    raise _failed(index, exc) from exc
        except BaseException:
            _unplace(staged)  # here, in the writer: the caller may be gone (cancelled)
            raise
        return results

    try:
        try:
            results = await app.write(run)
        except Exception:
            _unplace(staged)  # the commit itself failed
            raise
    finally:
        _discard(staged)
    return json_response(results)


routes = [Route("/api/batch", batch, methods=["POST"])]
