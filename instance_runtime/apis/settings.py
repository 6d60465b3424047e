"""`/api/settings`: read and change the app's settings (superusers only).

Contract (as PocketBase 0.40): `GET` answers the settings without their secrets; `PATCH` merges
the body into them (see `core.settings.patched`): a member of the wrong type is 400 "An error
occurred while loading the submitted data.", settings that do not validate are 400 "An error
occurred while saving the new settings." with the errors by member, and nothing is changed;
otherwise they are stored and answered as `GET` does. `POST /api/settings/test/email` sends one
auth e-mail for a stand-in record (`core.auth_email.send_test_email`; body `{template, email,
collection}`): 204 once sent, 400 "Failed to send the test email." with the errors by member,
or with the mailer's raw error when sending failed.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, json_response, read_body, require_superuser
from instance_runtime.apis.record_auth_email import form_strings
from instance_runtime.core import auth_email
from instance_runtime.core import settings as settings_store
from instance_runtime.core.errors import ApiError, bad_request
from instance_runtime.core.settings_validation import validate

_UNREADABLE = "An error occurred while loading the submitted data."


async def get_settings(request: Request) -> Response:
    await require_superuser(request)
    return json_response(settings_store.public(get_app(request).settings.current))


async def patch_settings(request: Request) -> Response:
    await require_superuser(request)
    app = get_app(request)
    body = await read_body(request, message=_UNREADABLE)
    try:
        values = settings_store.patched(app.settings.current, body)
    except settings_store.SettingsTypeError as exc:
        raise ApiError(400, _UNREADABLE) from exc
    errors = validate(values)
    if errors:
        raise bad_request("An error occurred while saving the new settings.", errors)
    await app.save_settings(values)
    return json_response(settings_store.public(values))


async def test_email(request: Request) -> Response:
    await require_superuser(request)
    app = get_app(request)
    body = await read_body(request, message=_UNREADABLE)
    template, email, collection = form_strings(body, "template", "email", "collection")
    await auth_email.send_test_email(app, template, email, collection)
    return Response(status_code=204)


routes = [
    Route("/api/settings", get_settings, methods=["GET"]),
    Route("/api/settings", patch_settings, methods=["PATCH"]),
    Route("/api/settings/test/email", test_email, methods=["POST"]),
]
