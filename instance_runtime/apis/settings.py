"""`/api/settings`: read and change the app's settings (superusers only).

Contract (as PocketBase 0.40): `GET` answers the settings without their secrets; `PATCH` merges
the body into them (see `core.settings.patched`): a member of the wrong type is 400 "An error
occurred while loading the submitted data.", settings that do not validate are 400 "An error
occurred while saving the new settings." with the errors by member, and nothing is changed;
otherwise they are stored and answered as `GET` does. `POST /api/settings/test/email` sends one
auth e-mail for a stand-in record (`core.auth_email.send_test_email`; body `{template, email,
collection}`): 204 once sent, 400 "Failed to send the test email." with the errors by member,
or with the mailer's raw error when sending failed. `POST /api/settings/test/s3` (body
`{filesystem: "storage"|"backups"}`) checks `settings.s3` or `settings.backups.s3` with
`core.file_storage.check_s3`: 204 when a test file could be uploaded, listed and deleted, 400
"Failed to test the S3 filesystem." with the errors by member for a bad body, or with the raw
error (`Raw error: \n...`) when the filesystem is not enabled or the check failed.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, json_response, read_body, require_superuser
from instance_runtime.apis.record_auth_email import form_strings
from instance_runtime.core import auth_email, file_storage
from instance_runtime.core import settings as settings_store
from instance_runtime.core.errors import ApiError, FieldError, bad_request, required
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


async def test_s3(request: Request) -> Response:
    await require_superuser(request)
    app = get_app(request)
    body = await read_body(request, message=_UNREADABLE)
    filesystem = body.get("filesystem", "")
    if filesystem is None:
        filesystem = ""
    if not isinstance(filesystem, str):
        raise ApiError(400, _UNREADABLE)
    failed = "Failed to test the S3 filesystem."
    if not filesystem:
        raise bad_request(failed, {"filesystem": required()})
    if filesystem not in ("storage", "backups"):
        invalid = FieldError("validation_in_invalid", "Must be a valid value.")
        raise bad_request(failed, {"filesystem": invalid})
    values = app.settings.current
    s3 = (values.get("backups") or {}).get("s3") if filesystem == "backups" else values.get("s3")
    try:
        await asyncio.to_thread(file_storage.check_s3, dict(s3 or {}))
    except file_storage.S3CheckError as exc:
        raise ApiError(400, f"{failed} Raw error: \n{exc}") from exc
    return Response(status_code=204)


routes = [
    Route("/api/settings", get_settings, methods=["GET"]),
    Route("/api/settings", patch_settings, methods=["PATCH"]),
    Route("/api/settings/test/email", test_email, methods=["POST"]),
    Route("/api/settings/test/s3", test_s3, methods=["POST"]),
]
