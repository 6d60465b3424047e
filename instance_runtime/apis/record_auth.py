"""Record auth: `auth-with-password`, `auth-refresh`, `auth-methods` of auth collections.

Contract: answers as PocketBase 0.40: `{"record": ..., "token": ...}` on success; a wrong
identity or password is 400 "Failed to authenticate."; a non-auth collection 400; refresh
without a valid token 401, with another collection's token 403.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    check_collection_rate_limit,
    get_app,
    json_response,
    read_body,
    request_info,
)
from instance_runtime.apis.records import collection_of, enrich
from instance_runtime.core import auth
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, FieldError, bad_request, unauthorized
from instance_runtime.core.events import RecordAuthRequestEvent
from instance_runtime.core.fields import to_str
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema


async def _auth_response(
    app: App, coll: Any, record: dict[str, Any], info: RequestInfo, method: str
) -> dict[str, Any]:
    """The `{token, record}` answer of a login, through `on_record_auth_request`."""
    info.auth = {**record, "collectionId": coll.id, "collectionName": coll.name}
    info.auth_collection = coll
    event = RecordAuthRequestEvent(info, coll, record, method, auth.new_auth_token(coll, record))
    answer: dict[str, Any] = {}

    async def respond(e: RecordAuthRequestEvent) -> None:
        def run(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
            return enrich(conn, schema, coll, [e.record], info)[0]

        answer.update({"record": await app.read(run), "token": e.token})
        if e.meta:
            answer["meta"] = e.meta

    await app.hooks.on_record_auth_request.trigger(event, respond)
    return answer


async def auth_with_password(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request)
    if not coll.is_auth:
        raise ApiError(404, "Missing or invalid auth collection context.")
    check_collection_rate_limit(request, app, coll, "authWithPassword", "auth")
    if not (coll.options.get("passwordAuth") or {}).get("enabled", False):
        raise ApiError(400, "The collection is not configured to allow password authentication.")
    body = await read_body(request, message="An error occurred while loading the submitted data.")
    info = await request_info(request, app, body)
    identity, password = to_str(body.get("identity")), to_str(body.get("password"))
    errors = {}
    if not identity:
        errors["identity"] = FieldError("validation_required", "Cannot be blank.")
    if not password:
        errors["password"] = FieldError("validation_required", "Cannot be blank.")
    if errors:
        raise bad_request("An error occurred while validating the submitted data.", errors)
    identity_field = to_str(body.get("identityField"))

    def find(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any] | None:
        return auth.authenticate_password(conn, coll, identity, password, identity_field)

    record = await app.read(find)
    if record is None:
        raise ApiError(400, "Failed to authenticate.")
    return json_response(await _auth_response(app, coll, record, info, "password"))


async def auth_refresh(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request)
    check_collection_rate_limit(request, app, coll, "authRefresh")
    info = await request_info(request, app)
    if info.auth is None or info.auth_collection is None:
        raise unauthorized()
    if info.auth_collection.id != coll.id:
        raise ApiError(403, "The request requires valid record authorization token.")
    record = {k: v for k, v in info.auth.items() if k not in ("collectionId", "collectionName")}
    return json_response(await _auth_response(app, coll, record, info, "refresh"))


async def auth_methods(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request)
    check_collection_rate_limit(request, app, coll, "listAuthMethods")
    if not coll.is_auth:
        raise ApiError(400, "The collection is not an auth collection.")
    password_auth = coll.options.get("passwordAuth") or {}
    return json_response(
        {
            "password": {
                "enabled": bool(password_auth.get("enabled")),
                "identityFields": list(password_auth.get("identityFields") or []),
            },
            "oauth2": {"enabled": False, "providers": []},
            "mfa": {"enabled": False, "duration": 0},
            "otp": {"enabled": False, "duration": 0},
        }
    )


routes = [
    Route("/api/collections/{collection}/auth-with-password", auth_with_password, methods=["POST"]),
    Route("/api/collections/{collection}/auth-refresh", auth_refresh, methods=["POST"]),
    Route("/api/collections/{collection}/auth-methods", auth_methods, methods=["GET"]),
]
