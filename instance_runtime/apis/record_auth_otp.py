"""One-time passwords and impersonation of auth records: `request-otp`, `auth-with-otp`,
`impersonate/{id}` (thin handlers over `core.otp`, `core.mfa` and `record_auth.auth_response`),
and `bind(app)`, which installs their model hooks.

Contract (as PocketBase 0.40, `apis/record_auth_otp_request.go`, `record_auth_with_otp.go`,
`record_auth_impersonate.go`):

- An unknown collection is 404 "Missing or invalid collection context." (after the
  collection's rate limit, tags `requestOTP` / `authWithOTP`+`auth`), one that is not an auth
  collection 404 "Missing or invalid auth collection context.", OTP off 403 "The collection is
  not configured to allow OTP authentication."; a body that cannot be read, or a member of the
  wrong type, 400 "An error occurred while loading the submitted data."; invalid members 400
  "An error occurred while validating the submitted data." with PocketBase's codes.
- `request-otp {email}` always answers `{"otpId": ...}`: for an unknown e-mail a random id that
  is stored nowhere (no mail); otherwise an OTP of `otp.length` digits, stored hashed in
  `_otps` (or the newest one reused past 10 live ones, without a mail), and the OTP mail queued
  with `app.mailer.send`: once delivered its recipient becomes the OTP's `sentTo`; when it
  cannot be delivered (SMTP off or failing) the OTP is deleted, as PocketBase does.
- `auth-with-otp {otpId, password}`: a missing, foreign or expired OTP, or a missing record,
  is 400 "Invalid or expired OTP."; then PocketBase's extra limiter `@pb_otp_RECORDID` (5
  attempts per 180 s per client address, applied even with rate limits off and to superusers)
  is 429 "Too many attempts, please try again later with a new OTP."; a wrong password 400
  "Invalid or expired OTP.". Success deletes the OTP and, when it was sent to the record's
  current e-mail, marks the record verified (and, unless MFA is on, gives it a random
  password, revoking its tokens); then `auth_response` with method `otp` (MFA applies).
- `impersonate/{id} {duration}`: superusers only (401 guest, 403 anyone else); the record of
  the auth collection (404 "The requested resource wasn't found."); `duration` an integer of
  seconds >= 0 (0: the collection's auth token duration); answers `auth_response` with a
  non-refreshable token (method `impersonate`: no MFA).
- `bind(app)`: `core.otp.bind` and `core.mfa.bind` on `app.hooks`. The expired `_otps` and
  `_mfas` are deleted by the cron jobs `__pbOTPCleanup__` / `__pbMFACleanup__` (`core.crons`);
  `delete_expired(conn, schema)` does both at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    get_app,
    json_response,
    rate_limit,
    read_body,
    request_info,
    require_superuser,
)
from instance_runtime.apis.record_auth import auth_collection, auth_response
from instance_runtime.apis.record_auth_email import UNREADABLE, form_strings
from instance_runtime.core import auth, mfa, otp, records
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, FieldError, ValidationErrors, bad_request
from instance_runtime.core.fields import validate
from instance_runtime.core.mails import render_auth_email
from instance_runtime.core.models import Collection, Field
from instance_runtime.core.records import Record
from instance_runtime.core.schema import Schema
from instance_runtime.tools import security
from instance_runtime.tools.mailer import Message

log = logging.getLogger("instance_runtime")

INVALID = "Invalid or expired OTP."
INVALID_FORM = "An error occurred while validating the submitted data."
OTP_TOO_MANY = "Too many attempts, please try again later with a new OTP."
OTP_DISABLED = "The collection is not configured to allow OTP authentication."
OTP_LIMIT = {"label": "@pb_otp_", "maxRequests": 5, "duration": 180, "audience": ""}
_EMAIL_FIELD = Field(name="email", type="email")


def _length_error(value: str, maximum: int) -> FieldError | None:
    if not value:
        return FieldError("validation_required", "Cannot be blank.")
    if len(value) > maximum:
        return FieldError(
            "validation_length_out_of_range",
            "The length must be between {{.min}} and {{.max}}.",
            {"max": maximum, "min": 1},
        )
    return None


def _refuse_invalid(errors: ValidationErrors) -> None:
    if errors:
        raise bad_request(INVALID_FORM, errors)


def _otp_collection(request: Request, app: App, *tags: str) -> Collection:
    coll = auth_collection(app, request, *tags)
    if not otp.options(coll).enabled:
        raise ApiError(403, OTP_DISABLED)
    return coll


# --- request-otp ------------------------------------------------------------------------------


def _send_otp_mail(app: App, coll: Collection, record: Record, otp_id: str, password: str) -> None:
    mail = render_auth_email("otp", app.settings.current, coll, record, otp=password, otp_id=otp_id)

    def sent(delivered: Message) -> None:
        to = delivered.to[0][0] if delivered.to else ""
        app.write_sync(lambda conn, schema: otp.mark_sent(conn, schema, otp_id, to, app.hooks))

    def failed() -> None:
        log.error("Failed to send OTP email; OTP %s deleted", otp_id)
        app.write_sync(lambda conn, schema: otp.delete(conn, schema, otp_id))

    app.mailer.send(mail, on_sent=sent, on_failed=failed)


async def request_otp(request: Request) -> Response:
    app = get_app(request)
    coll = _otp_collection(request, app, "requestOTP")
    (email,) = form_strings(await read_body(request, message=UNREADABLE), "email")
    error = _length_error(email, 255) or validate(_EMAIL_FIELD, email)
    _refuse_invalid({"email": error} if error else {})
    record = await app.read(lambda conn, schema: auth.find_by_email(conn, coll, email))
    if record is None:  # PocketBase's rudimentary protection against e-mail enumeration
        return json_response({"otpId": security.new_record_id()})
    found: Record = record
    password = otp.new_password(otp.options(coll).length)

    def issue(conn: sqlite3.Connection, schema: Schema) -> tuple[Record, bool]:
        return otp.issue(conn, schema, coll, found, password, app.hooks)

    item, created = await app.write(issue)
    otp_id = str(item["id"])
    if created:
        _send_otp_mail(app, coll, found, otp_id, password)
    else:
        log.warning("Too many OTP requests - reusing the last issued (otpId %s)", otp_id)
    return json_response({"otpId": otp_id})


# --- auth-with-otp ----------------------------------------------------------------------------


def _take_attempt(request: Request, app: App, record_id: str) -> None:
    try:
        rate_limit(app, request.scope, "@pb_otp_" + record_id, OTP_LIMIT)
    except ApiError as exc:
        if exc.status == 429:
            raise ApiError(429, OTP_TOO_MANY) from exc
        raise


async def auth_with_otp(request: Request) -> Response:
    app = get_app(request)
    coll = _otp_collection(request, app, "authWithOTP", "auth")
    body = await read_body(request, message=UNREADABLE)
    otp_id, password = form_strings(body, "otpId", "password")
    errors: ValidationErrors = {}
    for name, value, maximum in (("otpId", otp_id, 255), ("password", password, 71)):
        error = _length_error(value, maximum)
        if error is not None:
            errors[name] = error
    _refuse_invalid(errors)
    info = await request_info(request, app, body)
    info.context = "otp"

    def load(conn: sqlite3.Connection, schema: Schema) -> tuple[Record, Record] | None:
        item = otp.find(conn, schema, otp_id)
        if item is None or item.get("collectionRef") != coll.id:
            return None
        if otp.has_expired(item, otp.options(coll).duration):
            return None
        record = records.find(conn, coll, str(item.get("recordRef") or ""))
        return None if record is None else (item, record)

    found = await app.read(load)
    if found is None:
        raise bad_request(INVALID)
    item, record = found
    _take_attempt(request, app, str(record["id"]))
    if not await asyncio.to_thread(otp.password_matches, item, password):
        raise bad_request(INVALID)

    def consume(conn: sqlite3.Connection, schema: Schema) -> Record:
        current = records.find(conn, coll, str(record["id"]))
        if current is None or otp.find(conn, schema, otp_id) is None:
            raise bad_request(INVALID)  # used (or its record deleted) meanwhile: once only
        otp.delete(conn, schema, otp_id)
        return otp.verify_by_otp(conn, schema, coll, current, item, app.hooks)

    record = await app.write(consume)
    return json_response(await auth_response(app, coll, record, info, "otp", request=request))


# --- impersonate ------------------------------------------------------------------------------


def _duration(body: dict[str, Any], form: bool) -> int:
    """The `duration` member as Go binds an int64: a JSON integer, or a form's digits."""
    value = body.get("duration")
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if form and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return int(value.strip() or "0")
    raise ApiError(400, UNREADABLE)


async def impersonate(request: Request) -> Response:
    app = get_app(request)
    info = await require_superuser(request)
    coll = app.schema.find(request.path_params["collection"])
    if coll is None or not coll.is_auth:
        raise ApiError(404, "Missing or invalid auth collection context.")
    target: Collection = coll
    rid = request.path_params["id"]
    record = await app.read(lambda conn, schema: records.find(conn, target, rid))
    if record is None:
        raise ApiError(404, "The requested resource wasn't found.")
    body = await read_body(request, message=UNREADABLE)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    duration = _duration(
        body, ctype in ("multipart/form-data", "application/x-www-form-urlencoded")
    )
    if duration < 0:
        raise bad_request(
            INVALID_FORM,
            {
                "duration": FieldError(
                    "validation_min_greater_equal_than_required",
                    "Must be no less than {{.threshold}}.",
                    {"threshold": 0},
                )
            },
        )
    token = auth.new_token(target, record, "auth", {"refreshable": False}, duration)
    info.body = body
    answer = await auth_response(
        app, target, record, info, "impersonate", token=token, request=request
    )
    return json_response(answer)


# --- hooks and clean-up -----------------------------------------------------------------------


def delete_expired(conn: sqlite3.Connection, schema: Schema) -> int:
    """Delete the expired (and orphaned) `_otps` and `_mfas`; how many were deleted."""
    return otp.delete_expired(conn, schema) + mfa.delete_expired(conn, schema)


def bind(app: App) -> None:
    """See the module docstring."""
    otp.bind(app.hooks)
    mfa.bind(app.hooks)


routes = [
    Route("/api/collections/{collection}/request-otp", request_otp, methods=["POST"]),
    Route("/api/collections/{collection}/auth-with-otp", auth_with_otp, methods=["POST"]),
    Route("/api/collections/{collection}/impersonate/{id}", impersonate, methods=["POST"]),
]
