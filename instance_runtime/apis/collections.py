"""`/api/collections`: list, view, create, update, delete, truncate, import (superusers only).

Contract: every handler answers 401 without a valid token and 403 for a non-superuser (as
PocketBase's `RequireSuperuserAuth`), 404 for an unknown collection (id or name), and
PocketBase's shapes otherwise (`collections.py` in core holds the rules).
"""

from __future__ import annotations

import math
import sqlite3

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, json_response, read_body, require_superuser
from instance_runtime.core import automigrate
from instance_runtime.core import collections as service
from instance_runtime.core.app import SchemaChange
from instance_runtime.core.errors import (
    FieldError,
    bad_request,
    not_found,
)
from instance_runtime.core.expand import pick_fields
from instance_runtime.core.models import Collection
from instance_runtime.core.records import ListParams
from instance_runtime.core.schema import Schema

_SORTABLE = ("id", "name", "type", "system", "created", "updated")


def _find(schema: Schema, request: Request) -> Collection:
    coll = schema.find(request.path_params["collection"])
    if coll is None:
        raise not_found()
    return coll


def _sorted(items: list[Collection], sort: str) -> list[Collection]:
    for raw in reversed([s.strip() for s in sort.split(",") if s.strip()]):
        desc = raw.startswith("-")
        name = raw.lstrip("+-")
        if name not in _SORTABLE:
            raise bad_request()
        items = sorted(items, key=lambda c: str(getattr(c, name)), reverse=desc)
    return items


async def list_collections(request: Request) -> Response:
    await require_superuser(request)
    app = get_app(request)
    params = ListParams.parse(dict(request.query_params))
    items = _sorted(app.schema.all(), params.sort)
    if params.filter.strip():
        expr = params.filter

        def run(conn: sqlite3.Connection, schema: Schema) -> set[str]:
            from instance_runtime.core import rules

            return rules.filter_collection_ids(conn, expr)

        ids = await app.read(run)
        items = [c for c in items if c.id in ids]
    total = len(items)
    start = (params.page - 1) * params.per_page
    page = items[start : start + params.per_page]
    fields = request.query_params.get("fields", "")
    return json_response(
        {
            "items": [pick_fields(c.to_json(), fields) for c in page],
            "page": params.page,
            "perPage": params.per_page,
            "totalItems": -1 if params.skip_total else total,
            "totalPages": -1 if params.skip_total else math.ceil(total / params.per_page),
        }
    )


async def view_collection(request: Request) -> Response:
    await require_superuser(request)
    coll = _find(get_app(request).schema, request)
    return json_response(pick_fields(coll.to_json(), request.query_params.get("fields", "")))


_BAD_COLLECTION = "Failed to load the collection type data due to invalid formatting."
_BAD_DATA = "Failed to load the submitted data due to invalid formatting."


async def create_collection(request: Request) -> Response:
    await require_superuser(request)
    app = get_app(request)
    body = await read_body(request, message=_BAD_COLLECTION)

    def run(conn: sqlite3.Connection, schema: Schema) -> SchemaChange[Collection]:
        coll = service.create(conn, schema, body, hooks=app.hooks)
        return SchemaChange(coll, Schema.load(conn))

    coll = await app.write_schema(run)
    await automigrate.collection_changed(app, None, coll)
    return json_response(pick_fields(coll.to_json(), request.query_params.get("fields", "")))


async def update_collection(request: Request) -> Response:
    await require_superuser(request)
    app = get_app(request)
    old = _find(app.schema, request)
    body = await read_body(request, message=_BAD_DATA)

    def run(conn: sqlite3.Connection, schema: Schema) -> SchemaChange[Collection]:
        current = schema.find(old.id)
        if current is None:
            raise not_found()
        coll = service.update(conn, schema, current, body, hooks=app.hooks)
        return SchemaChange(coll, Schema.load(conn))

    coll = await app.write_schema(run)
    await automigrate.collection_changed(app, old, coll)
    return json_response(pick_fields(coll.to_json(), request.query_params.get("fields", "")))


async def delete_collection(request: Request) -> Response:
    await require_superuser(request)
    app = get_app(request)
    coll = _find(app.schema, request)

    def run(conn: sqlite3.Connection, schema: Schema) -> SchemaChange[None]:
        service.delete(conn, schema, coll, hooks=app.hooks)
        return SchemaChange(None, Schema.load(conn))

    await app.write_schema(run)
    await automigrate.collection_changed(app, coll, None)
    return Response(status_code=204)


async def truncate_collection(request: Request) -> Response:
    await require_superuser(request)
    app = get_app(request)
    coll = _find(app.schema, request)
    await app.write(lambda conn, schema: service.truncate(conn, schema, coll))
    return Response(status_code=204)


async def import_collections(request: Request) -> Response:
    await require_superuser(request)
    body = await read_body(request, message="An error occurred while loading the submitted data.")
    items = body.get("collections")
    if not isinstance(items, list) or not items:
        raise bad_request(
            "An error occurred while validating the submitted data.",
            {"collections": FieldError("validation_required", "Cannot be blank.")},
        )
    delete_missing = bool(body.get("deleteMissing"))
    app = get_app(request)

    def run(conn: sqlite3.Connection, schema: Schema) -> SchemaChange[None]:
        service.import_collections(conn, schema, items, delete_missing, hooks=app.hooks)
        return SchemaChange(None, Schema.load(conn))

    await app.write_schema(run)
    return Response(status_code=204)


routes = [
    Route("/api/collections", list_collections, methods=["GET"]),
    Route("/api/collections", create_collection, methods=["POST"]),
    Route("/api/collections/import", import_collections, methods=["PUT"]),
    Route("/api/collections/{collection}", view_collection, methods=["GET"]),
    Route("/api/collections/{collection}", update_collection, methods=["PATCH"]),
    Route("/api/collections/{collection}", delete_collection, methods=["DELETE"]),
    Route("/api/collections/{collection}/truncate", truncate_collection, methods=["DELETE"]),
]
