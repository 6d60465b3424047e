"""The e-mail auth routes of auth collections: `request-verification`, `confirm-verification`,
`request-password-reset`, `confirm-password-reset`, `request-email-change`,
`confirm-email-change` (thin handlers over `core.auth_email`).

Contract (as PocketBase 0.40): each route takes its collection's rate limit first (tag
`requestVerification`, `confirmVerification`, ...; an unknown collection is 404 "Missing or
invalid collection context."); `request-email-change` then needs the auth of a record of that
collection (401 "The request requires valid record authorization token.", 403 for a record of
another collection); a collection that is not an auth collection is 404 "Missing or invalid
auth collection context."; a body that cannot be read, or a member that is not a string, is 400
"An error occurred while loading the submitted data."; success is 204 without a body.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    check_collection_rate_limit,
    get_app,
    read_body,
    request_auth,
)
from instance_runtime.core import auth_email
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, forbidden, unauthorized
from instance_runtime.core.models import Collection

UNREADABLE = "An error occurred while loading the submitted data."


def form_strings(body: dict[str, Any], *names: str) -> list[str]:
    """The string members `names` of a submitted form ("" when missing or null); any other
    type cannot be bound to PocketBase's form (400)."""
    values: list[str] = []
    for name in names:
        value = body.get(name)
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ApiError(400, UNREADABLE)
        values.append(value)
    return values


def _collection(request: Request, app: App, tag: str) -> Collection:
    """The path's collection after its rate limit (404 when there is none)."""
    coll = app.schema.find(request.path_params["collection"])
    if coll is None:
        raise ApiError(404, "Missing or invalid collection context.")
    check_collection_rate_limit(request, app, coll, tag)
    return coll


def _auth_collection(coll: Collection) -> Collection:
    if not coll.is_auth:
        raise ApiError(404, "Missing or invalid auth collection context.")
    return coll


def _done() -> Response:
    return Response(status_code=204)


async def request_verification(request: Request) -> Response:
    app = get_app(request)
    coll = _auth_collection(_collection(request, app, "requestVerification"))
    auth_email.check_flow(coll, "request-verification")
    (email,) = form_strings(await read_body(request, message=UNREADABLE), "email")
    await auth_email.request_verification(app, coll, email)
    return _done()


async def confirm_verification(request: Request) -> Response:
    app = get_app(request)
    coll = _auth_collection(_collection(request, app, "confirmVerification"))
    auth_email.check_flow(coll, "confirm-verification")
    (token,) = form_strings(await read_body(request, message=UNREADABLE), "token")
    await auth_email.confirm_verification(app, coll, token)
    return _done()


async def request_password_reset(request: Request) -> Response:
    app = get_app(request)
    coll = _auth_collection(_collection(request, app, "requestPasswordReset"))
    auth_email.check_flow(coll, "request-password-reset")
    (email,) = form_strings(await read_body(request, message=UNREADABLE), "email")
    await auth_email.request_password_reset(app, coll, email)
    return _done()


async def confirm_password_reset(request: Request) -> Response:
    app = get_app(request)
    coll = _auth_collection(_collection(request, app, "confirmPasswordReset"))
    body = await read_body(request, message=UNREADABLE)
    token, password, confirm = form_strings(body, "token", "password", "passwordConfirm")
    await auth_email.confirm_password_reset(app, coll, token, password, confirm)
    return _done()


async def request_email_change(request: Request) -> Response:
    app = get_app(request)
    coll = _collection(request, app, "requestEmailChange")
    found = await request_auth(request, app)
    if found is None:
        raise unauthorized()
    if found[0].id != coll.id:
        raise forbidden(f"The request requires auth record from {found[0].name} collection.")
    coll = _auth_collection(coll)
    auth_email.check_flow(coll, "request-email-change")
    (new_email,) = form_strings(await read_body(request, message=UNREADABLE), "newEmail")
    await auth_email.request_email_change(app, coll, found[1], new_email)
    return _done()


async def confirm_email_change(request: Request) -> Response:
    app = get_app(request)
    coll = _auth_collection(_collection(request, app, "confirmEmailChange"))
    auth_email.check_flow(coll, "confirm-email-change")
    body = await read_body(request, message=UNREADABLE)
    token, password = form_strings(body, "token", "password")
    await auth_email.confirm_email_change(app, coll, token, password)
    return _done()


_BASE = "/api/collections/{collection}"
routes = [
    Route(f"{_BASE}/request-verification", request_verification, methods=["POST"]),
    Route(f"{_BASE}/confirm-verification", confirm_verification, methods=["POST"]),
    Route(f"{_BASE}/request-password-reset", request_password_reset, methods=["POST"]),
    Route(f"{_BASE}/confirm-password-reset", confirm_password_reset, methods=["POST"]),
    Route(f"{_BASE}/request-email-change", request_email_change, methods=["POST"]),
    Route(f"{_BASE}/confirm-email-change", confirm_email_change, methods=["POST"]),
]
