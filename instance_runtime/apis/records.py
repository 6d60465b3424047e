"""`/api/collections/{collection}/records`: list, view, create, update, delete.

Contract: thin handlers over `core.records` / `core.record_write`, each through its request
hook (`on_records_list_request`, `on_record_view_request`, ...: `next()` does the operation and
leaves the answer in the event) after PocketBase's per-collection rate limit (`list`, `view`,
`create`, `update`, `delete`); PocketBase's statuses and shapes: unknown collection 404
"Missing collection context.", rules as in core, `expand` and `fields` applied to every
returned record, create/update answer the record (200), delete 204.
The body limit is PocketBase's: 32 MiB plus each json/editor/file field's maximum size.
Create and update take multipart file uploads for `file` fields (see `core.files`).
List and view read inline first (`core.db`: keyed by the request's shape).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    DEFAULT_MAX_BODY,
    check_collection_rate_limit,
    get_app,
    json_response,
    read_body,
    request_info,
)
from instance_runtime.apis.files import stage_uploads
from instance_runtime.core import files, record_write, records
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, ValidationErrors
from instance_runtime.core.events import RecordRequestEvent, RecordsListRequestEvent
from instance_runtime.core.expand import expand_records, pick_fields
from instance_runtime.core.models import Collection
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema


def collection_of(
    app: App, request: Request, message: str = "Missing collection context."
) -> Collection:
    coll = app.schema.find(request.path_params["collection"])
    if coll is None:
        raise ApiError(404, message)
    return coll


_NO_BODY_COLLECTION = "Missing or invalid collection context."


def body_limit(coll: Collection) -> int:
    """PocketBase's per-collection body limit."""
    limit = DEFAULT_MAX_BODY
    if coll.is_view:
        return limit
    for f in coll.fields:
        if f.type == "json":
            limit += int(f.opt("maxSize") or 0) or (1 << 20)
        elif f.type == "editor":
            limit += int(f.opt("maxSize") or 0) or (5 << 20)
        elif f.type == "file":
            limit += (int(f.opt("maxSize") or 0) or (5 << 20)) * max(f.max_select, 1)
    return limit


def enrich(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    items: list[records.Record],
    info: RequestInfo,
) -> list[dict[str, Any]]:
    """Serialized records with `expand` and `fields` from the request query applied."""
    expand = info.query.get("expand", "")
    expanded = expand_records(conn, schema, coll, items, expand, info)
    fields = info.query.get("fields", "")
    managed = records.managed_ids(conn, schema, coll, items, info)
    out = []
    for item in items:
        rid = str(item["id"])
        data = records.serialize(coll, item, info, expanded.get(rid), show_email=rid in managed)
        out.append(pick_fields(data, fields) if fields else data)
    return out


async def list_records(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request)
    check_collection_rate_limit(request, app, coll, "list")
    info = await request_info(request, app)
    params = records.ListParams.parse(info.query)

    def run(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
        result = records.list_records(conn, schema, coll, params, info)
        result["items"] = enrich(conn, schema, coll, result["items"], info)
        return result

    paging = [info.query.get(k, "") for k in ("expand", "page", "perPage", "skipTotal")]
    shape = ("list", coll.id, params.filter, params.sort, *paging)

    async def answer(e: RecordsListRequestEvent) -> None:
        e.result = await app.read(run, inline_key=shape)

    event = RecordsListRequestEvent(info, coll)
    await app.hooks.on_records_list_request.trigger(event, answer)
    return json_response(event.result)


async def view_record(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request)
    check_collection_rate_limit(request, app, coll, "view")
    info = await request_info(request, app)
    rid = request.path_params["id"]

    def run(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
        record = records.view_record(conn, schema, coll, rid, info)
        return enrich(conn, schema, coll, [record], info)[0]

    shape = ("view", coll.id, info.query.get("expand", ""))

    async def answer(e: RecordRequestEvent) -> None:
        e.record = await app.read(run, inline_key=shape)

    event = RecordRequestEvent(info, coll, record_id=rid)
    await app.hooks.on_record_view_request.trigger(event, answer)
    return json_response(event.record)


async def create_record(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request, _NO_BODY_COLLECTION)
    check_collection_rate_limit(request, app, coll, "create")
    body = await read_body(request, body_limit(coll))
    info = await request_info(request, app, body)
    staged = await stage_uploads(request)

    async def answer(e: RecordRequestEvent) -> None:
        def run(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
            def write(data: dict[str, Any], errors: ValidationErrors) -> Record:
                return record_write.create(
                    conn, schema, coll, data, info, hooks=app.hooks, file_errors=errors
                )

            record = files.write_record(conn, coll, None, e.body, staged, write)
            return enrich(conn, schema, coll, [record], info)[0]

        e.record = await app.write(run)

    event = RecordRequestEvent(info, coll, body=body)
    try:
        await app.hooks.on_record_create_request.trigger(event, answer)
    finally:
        files.discard(staged)
    return json_response(event.record)


async def update_record(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request, _NO_BODY_COLLECTION)
    check_collection_rate_limit(request, app, coll, "update")
    body = await read_body(request, body_limit(coll))
    info = await request_info(request, app, body)
    rid = request.path_params["id"]
    staged = await stage_uploads(request)

    async def answer(e: RecordRequestEvent) -> None:
        def run(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
            def write(data: dict[str, Any], errors: ValidationErrors) -> Record:
                return record_write.update(
                    conn, schema, coll, rid, data, info, hooks=app.hooks, file_errors=errors
                )

            old = records.find(conn, coll, rid)
            record = files.write_record(conn, coll, old, e.body, staged, write)
            return enrich(conn, schema, coll, [record], info)[0]

        e.record = await app.write(run)

    event = RecordRequestEvent(info, coll, body=body, record_id=rid)
    try:
        await app.hooks.on_record_update_request.trigger(event, answer)
    finally:
        files.discard(staged)
    return json_response(event.record)


async def delete_record(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request)
    check_collection_rate_limit(request, app, coll, "delete")
    body = await read_body(request, body_limit(coll))
    info = await request_info(request, app, body)
    rid = request.path_params["id"]

    async def answer(e: RecordRequestEvent) -> None:
        await app.write(
            lambda conn, schema: record_write.delete(conn, schema, coll, rid, info, hooks=app.hooks)
        )

    event = RecordRequestEvent(info, coll, body=body, record_id=rid)
    await app.hooks.on_record_delete_request.trigger(event, answer)
    return Response(status_code=204)


routes = [
    Route("/api/collections/{collection}/records", list_records, methods=["GET"]),
    Route("/api/collections/{collection}/records", create_record, methods=["POST"]),
    Route("/api/collections/{collection}/records/{id}", view_record, methods=["GET"]),
    Route("/api/collections/{collection}/records/{id}", update_record, methods=["PATCH"]),
    Route("/api/collections/{collection}/records/{id}", delete_record, methods=["DELETE"]),
]
