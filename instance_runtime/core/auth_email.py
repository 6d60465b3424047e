"""The e-mail auth flows of auth collections (PocketBase's `request-verification`,
`confirm-verification`, `request-password-reset`, `confirm-password-reset`, `request-email-change`,
`confirm-email-change`) and the test e-mail of the settings, usable without HTTP.

Contract (as PocketBase 0.40, `apis/record_auth_*.go` and `forms/test_email_send.go`):

- Every function takes the auth collection and the submitted values as strings and raises
  `ApiError` to refuse: `check_flow(coll, flow)` first (the `_superusers` refusals, password
  auth off for a reset), then the form's validation as one 400 "An error occurred while
  validating the submitted data." with PocketBase's codes and messages by field.
- `request_*` never tell whether an address is known: an unknown e-mail, an already verified
  record and a request inside the resend throttle all return quietly (the HTTP answer is 204).
  A mail is rendered from the collection's template (`core.mails.render_auth_email`) with a
  token signed for the record (`core.auth.new_token`: `verification` and `passwordReset` carry
  the record's `email`, `emailChange` also `newEmail`) and queued with `app.mailer.send`, so
  the caller never waits for SMTP. A verification or reset mail holds back the next one of its
  kind for that record for `RESEND_COOLDOWN` seconds (PocketBase's `@limitVerificationEmail_` /
  `@limitPasswordResetEmail_` store keys); the matching confirm releases it, and so does a reset
  mail that could not be sent (a verification mail holds it either way, as PocketBase). The
  hold starts when the mail is queued (PocketBase: once its background send returned, so two
  quick requests there may both send).
- `confirm_*` verify the token (signature with the record's `tokenKey`, expiry, kind, its
  collection) and write with `record_write.save` (model hooks, no API rules), re-checking the
  token inside the write transaction. Verification sets `verified` (and, when password auth is
  off, a random password); a password reset sets the new password, rotates `tokenKey` (so every
  older token of the record dies, the reset token too) and sets `verified` when the token's
  `email` is still the record's; an e-mail change needs the record's password, sets the new
  address and `verified`, and rotates `tokenKey`.
- `send_test_email(app, template, email, collection)` sends one auth e-mail of `template`
  (`verification`, `password-reset`, `email-change`, `otp`, `login-alert`) for a stand-in
  record of `collection` (default `_superusers`) to `email`, in a worker thread with
  `app.mailer.send_now`; a failure to send is a 400 "Failed to send the test email. Raw error:
  ..." with the mailer's error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from typing import Literal

from instance_runtime.core import auth, record_write
from instance_runtime.core import fields as fv
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, FieldError, ValidationErrors, bad_request
from instance_runtime.core.mails import render_auth_email
from instance_runtime.core.models import Collection, Field, now_datetime
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import SUPERUSERS
from instance_runtime.core.schema import Schema
from instance_runtime.tools import security
from instance_runtime.tools.mailer import MailerError, Message

log = logging.getLogger("instance_runtime.auth")

Flow = Literal[
    "request-verification",
    "confirm-verification",
    "request-password-reset",
    "confirm-password-reset",
    "request-email-change",
    "confirm-email-change",
]

INVALID_FORM = "An error occurred while validating the submitted data."
RESEND_COOLDOWN = 120.0  # seconds (PocketBase: 2 minutes)
TEST_TEMPLATES = ("verification", "password-reset", "email-change", "otp", "login-alert")

_EMAIL_FORMAT = Field(name="email", type="email")
_BCRYPT_MAX_BYTES = 72


# ------------------------------------------------------------------------------ resend throttle
class ResendThrottle:
    """Keys that hold back a second mail of one kind to one record for a while (PocketBase's
    `app.Store()` entries with a 2-minute expiry). Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[str, float] = {}
        self._lock = threading.Lock()

    def active(self, key: str) -> bool:
        with self._lock:
            until = self._until.get(key)
            if until is None:
                return False
            if until <= self._clock():
                del self._until[key]
                return False
            return True

    def hold(self, key: str, seconds: float = RESEND_COOLDOWN) -> None:
        with self._lock:
            now = self._clock()
            self._until = {k: t for k, t in self._until.items() if t > now}
            self._until[key] = now + seconds

    def release(self, key: str) -> None:
        with self._lock:
            self._until.pop(key, None)


_throttles: weakref.WeakKeyDictionary[App, ResendThrottle] = weakref.WeakKeyDictionary()
_throttles_lock = threading.Lock()


def throttle_of(app: App) -> ResendThrottle:
    """The resend throttle of `app` (one per app, made on first use)."""
    with _throttles_lock:
        found = _throttles.get(app)
        if found is None:
            found = _throttles[app] = ResendThrottle()
        return found


def verification_key(coll: Collection, record: Record) -> str:
    return f"@limitVerificationEmail_{coll.id}{record['id']}"


def password_reset_key(coll: Collection, record: Record) -> str:
    return f"@limitPasswordResetEmail_{coll.id}{record['id']}"


# ------------------------------------------------------------------------------ form checks
def _required() -> FieldError:
    return FieldError("validation_required", "Cannot be blank.")


def _length(value: str, low: int, high: int) -> FieldError | None:
    """ozzo-validation's `Length(low, high)` (runes; an empty value passes)."""
    if value and not low <= len(value) <= high:
        return FieldError(
            "validation_length_out_of_range",
            "The length must be between {{.min}} and {{.max}}",
            {"min": low, "max": high},
        )
    return None


def email_error(value: str) -> FieldError | None:
    """`Required, Length(1, 255), is.EmailFormat` of PocketBase's auth forms."""
    if not value:
        return _required()
    return _length(value, 1, 255) or fv.validate(_EMAIL_FORMAT, value)


def _raise_if(errors: ValidationErrors, message: str = INVALID_FORM) -> None:
    if errors:
        raise bad_request(message, errors)


def check_flow(coll: Collection, flow: Flow) -> None:
    """The refusals of `flow` that come before its form is read (see the module docstring)."""
    if coll.name == SUPERUSERS:
        if flow in ("request-verification", "confirm-verification"):
            raise ApiError(400, "All superusers are verified by default.")
        if flow in ("request-email-change", "confirm-email-change"):
            raise ApiError(400, "All superusers can change their emails directly.")
    if flow == "request-password-reset" and not _password_auth(coll):
        raise ApiError(400, "The collection is not configured to allow password authentication.")


def _password_auth(coll: Collection) -> bool:
    option = coll.options.get("passwordAuth") or {}
    return bool(option.get("enabled")) if isinstance(option, dict) else False


# ------------------------------------------------------------------------------ records
def _token_for(
    conn: sqlite3.Connection, schema: Schema, coll: Collection, token: str, kind: auth.TokenKind
) -> tuple[Record | None, FieldError | None]:
    """The record of a valid `kind` token of `coll`, or the form error PocketBase answers."""
    found = auth.verify_token(conn, schema, token, kind)
    if found is None:
        return None, FieldError("validation_invalid_token", "Invalid or expired token.")
    if found[0].id != coll.id:
        return None, FieldError(
            "validation_token_collection_mismatch",
            "The provided token is for different auth collection.",
        )
    return found[1], None


def _segment(text: str) -> object:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def unverified_claims(token: str) -> dict[str, object]:
    """The claims of a JWT as PocketBase's `ParseUnverifiedJWT` reads them: the header and the
    claims are decoded, the signature is not looked at (nor is the expiry, for this use)."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        header, claims = _segment(parts[0]), _segment(parts[1])
    except (ValueError, binascii.Error):
        return {}
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        return {}
    return claims if isinstance(claims, dict) else {}


def _claim(token: str, name: str) -> str:
    value = unverified_claims(token).get(name)
    return value if isinstance(value, str) else ""


def _save(
    app: App,
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    original: Record,
    message: str,
) -> Record:
    """`record_write.save`, its refusal answered with the flow's `message` (same data)."""
    try:
        return record_write.save(conn, schema, coll, record, hooks=app.hooks, original=original)
    except ApiError as exc:
        if exc.status != 400:
            raise
        raise ApiError(400, message, exc.data) from exc


# ------------------------------------------------------------------------------ verification
async def request_verification(app: App, coll: Collection, email: str) -> None:
    """See the module docstring."""
    check_flow(coll, "request-verification")
    error = email_error(email)
    if error is not None:
        raise bad_request(INVALID_FORM, {"email": error})
    record = await app.read(lambda conn, schema: auth.find_by_email(conn, coll, email))
    if record is None:
        log.debug("request-verification: no %s record with email %s", coll.name, email)
        return
    throttle = throttle_of(app)
    key = verification_key(coll, record)
    if record.get("verified"):
        return
    if throttle.active(key):
        log.debug("request-verification: %s asked again too soon", record["id"])
        return
    token = auth.new_token(coll, record, "verification", {"email": str(record.get("email"))})
    throttle.hold(key)  # held whether the mail goes out or not, as PocketBase
    app.mailer.send(
        render_auth_email("verification", app.settings.current, coll, record, token=token)
    )


async def confirm_verification(app: App, coll: Collection, token: str) -> None:
    """See the module docstring."""
    check_flow(coll, "confirm-verification")

    def check(conn: sqlite3.Connection, schema: Schema) -> None:
        if not token:
            raise bad_request(INVALID_FORM, {"token": _required()})
        if not _claim(token, "email"):
            missing = FieldError("validation_invalid_token_claims", "Missing email token claim.")
            raise bad_request(INVALID_FORM, {"token": missing})
        record, error = _token_for(conn, schema, coll, token, "verification")
        if error is None and record is not None and record.get("email") != _claim(token, "email"):
            error = FieldError(
                "validation_token_email_mismatch",
                "The record email doesn't match with the requested token claims.",
            )
        _raise_if({"token": error} if error is not None else {})

    await app.read(check)
    random_hash = ""
    if not _password_auth(coll):
        # As PocketBase: confirming an address of a collection without password auth also
        # resets the password, against pre-hijacking once password auth is turned on.
        password_field = coll.field("password")
        cost = int(password_field.opt("cost") or 0) if password_field is not None else 0
        random_hash = await asyncio.to_thread(
            security.hash_password, security.random_string(30), cost
        )

    def write(conn: sqlite3.Connection, schema: Schema) -> Record:
        found = auth.verify_token(conn, schema, token, "verification")
        if found is None:
            raise ApiError(400, "Invalid or expired verification token.")
        record = found[1]
        if record.get("verified"):
            return record
        changed = {**record, "verified": True}
        if random_hash:
            changed.update(password=random_hash, tokenKey=security.random_string(50))
        message = "An error occurred while saving the verified state."
        return _save(app, conn, schema, coll, changed, record, message)

    record = await app.write(write)
    throttle_of(app).release(verification_key(coll, record))


# ------------------------------------------------------------------------------ password reset
async def request_password_reset(app: App, coll: Collection, email: str) -> None:
    """See the module docstring."""
    check_flow(coll, "request-password-reset")
    error = email_error(email)
    if error is not None:
        raise bad_request(INVALID_FORM, {"email": error})
    record = await app.read(lambda conn, schema: auth.find_by_email(conn, coll, email))
    if record is None:
        log.debug("request-password-reset: no %s record with email %s", coll.name, email)
        return
    throttle = throttle_of(app)
    key = password_reset_key(coll, record)
    if throttle.active(key):
        log.debug("request-password-reset: %s asked again too soon", record["id"])
        return
    token = auth.new_token(coll, record, "passwordReset", {"email": str(record.get("email"))})
    message = render_auth_email("resetPassword", app.settings.current, coll, record, token=token)
    throttle.hold(key)  # released when the mail could not be sent, as PocketBase
    app.mailer.send(message, on_failed=lambda: throttle.release(key))


def _min_password_length(coll: Collection) -> int:
    password_field = coll.field("password")
    low = int(password_field.opt("min") or 0) if password_field is not None else 0
    return low if low > 0 else 1


async def confirm_password_reset(
    app: App, coll: Collection, token: str, password: str, password_confirm: str
) -> None:
    """See the module docstring."""
    check_flow(coll, "confirm-password-reset")

    def check(conn: sqlite3.Connection, schema: Schema) -> None:
        errors: ValidationErrors = {}
        if not token:
            errors["token"] = _required()
        else:
            _, error = _token_for(conn, schema, coll, token, "passwordReset")
            if error is not None:
                errors["token"] = error
        if not password:
            errors["password"] = _required()
        else:
            error = _length(password, _min_password_length(coll), 255)
            if error is not None:
                errors["password"] = error
        if not password_confirm:
            errors["passwordConfirm"] = _required()
        elif password_confirm != password:
            errors["passwordConfirm"] = FieldError(
                "validation_values_mismatch", "Values don't match."
            )
        _raise_if(errors)

    await app.read(check)
    failed = "Failed to set new password."
    password_field = coll.field("password")
    if len(password.encode()) > _BCRYPT_MAX_BYTES:
        # PocketBase cannot hash it (bcrypt's limit) and answers the hashing error as such
        raise bad_request(
            failed, {"password": FieldError("validation_invalid_value", "Invalid value.")}
        )
    if password_field is not None:
        error = fv.validate_password(password_field, password)
        if error is not None:
            raise bad_request(failed, {"password": error})
    cost = int(password_field.opt("cost") or 0) if password_field is not None else 0
    hashed = await asyncio.to_thread(security.hash_password, password, cost)
    email_claim = _claim(token, "email")

    def write(conn: sqlite3.Connection, schema: Schema) -> Record:
        found = auth.verify_token(conn, schema, token, "passwordReset")
        if found is None:
            raise ApiError(400, "Invalid or expired password reset token.")
        record = found[1]
        changed = {**record, "password": hashed, "tokenKey": security.random_string(50)}
        if not record.get("verified") and record.get("email") == email_claim:
            changed["verified"] = True  # the address still is the one the mail went to
        return _save(app, conn, schema, coll, changed, record, failed)

    record = await app.write(write)
    throttle_of(app).release(password_reset_key(coll, record))


# ------------------------------------------------------------------------------ email change
async def request_email_change(app: App, coll: Collection, record: Record, new_email: str) -> None:
    """See the module docstring; `record` is the authenticated record of `coll`."""
    check_flow(coll, "request-email-change")
    current = str(record.get("email") or "")

    def check(conn: sqlite3.Connection, schema: Schema) -> None:
        error = email_error(new_email)
        if error is None and new_email == current:
            error = FieldError("validation_not_in_invalid", "Must not be in list.")
        if error is None:
            other = auth.find_by_email(conn, coll, new_email)
            if other is not None and other["id"] != record["id"]:
                error = FieldError("validation_invalid_new_email", "Invalid new email address.")
        _raise_if({"newEmail": error} if error is not None else {})

    await app.read(check)
    claims = {"email": current, "newEmail": new_email}
    token = auth.new_token(coll, record, "emailChange", claims)
    message = render_auth_email(
        "confirmEmailChange",
        app.settings.current,
        coll,
        record,
        token=token,
        new_email=new_email,
    )
    app.mailer.send(message)


def _email_change_target(
    conn: sqlite3.Connection, schema: Schema, coll: Collection, token: str
) -> tuple[Record | None, str, FieldError | None]:
    """PocketBase's `EmailChangeConfirmForm.parseToken`: the record and its new address."""
    new_email = _claim(token, "newEmail")
    if not new_email:
        return (
            None,
            "",
            FieldError(
                "validation_invalid_token_payload",
                "Invalid token payload - newEmail must be set.",
            ),
        )
    record, error = _token_for(conn, schema, coll, token, "emailChange")
    if error is not None:
        return None, "", error
    if auth.find_by_email(conn, coll, new_email) is not None:
        taken = FieldError("validation_invalid_token_email", "The new email address is invalid.")
        return None, "", taken
    return record, new_email, None


async def confirm_email_change(app: App, coll: Collection, token: str, password: str) -> None:
    """See the module docstring."""
    check_flow(coll, "confirm-email-change")

    def check(conn: sqlite3.Connection, schema: Schema) -> None:
        errors: ValidationErrors = {}
        record, _, error = _email_change_target(conn, schema, coll, token)
        if not token:
            errors["token"] = _required()
        elif error is not None:
            errors["token"] = error
        if not password:
            errors["password"] = _required()
        else:
            length = _length(password, 1, 100)
            if length is not None:
                errors["password"] = length
            elif record is None or not security.check_password(
                password, str(record.get("password") or "")
            ):
                errors["password"] = FieldError(
                    "validation_invalid_password", "Missing or invalid auth record password."
                )
        _raise_if(errors)

    await app.read(check)

    def write(conn: sqlite3.Connection, schema: Schema) -> None:
        record, new_email, error = _email_change_target(conn, schema, coll, token)
        if error is not None or record is None:
            raise ApiError(400, "Invalid or expired token.")
        changed = {
            **record,
            "email": new_email,
            "verified": True,
            "tokenKey": security.random_string(50),
        }
        _save(app, conn, schema, coll, changed, record, "Failed to confirm email change.")

    await app.write(write)


# ------------------------------------------------------------------------------ test e-mail
def _stand_in_record(coll: Collection, email: str) -> Record:
    """PocketBase's test record: every visible field set to `__pb_test_NAME__` (as its type
    takes it), a fresh `tokenKey`, and `email`."""
    record: Record = {}
    for f in coll.fields:
        if f.hidden:
            continue
        record[f.name] = fv.prepare(f, f"__pb_test_{f.name}__")
    record["tokenKey"] = security.random_string(50)
    record["email"] = email
    return record


def build_test_email(app: App, coll: Collection, template: str, email: str) -> Message:
    """The message `send_test_email` sends (see the module docstring)."""
    record = _stand_in_record(coll, email)
    settings = app.settings.current
    if template == "verification":
        token = auth.new_token(coll, record, "verification", {"email": email})
        return render_auth_email("verification", settings, coll, record, token=token)
    if template == "password-reset":
        token = auth.new_token(coll, record, "passwordReset", {"email": email})
        return render_auth_email("resetPassword", settings, coll, record, token=token)
    if template == "email-change":
        claims = {"email": email, "newEmail": email}
        token = auth.new_token(coll, record, "emailChange", claims)
        return render_auth_email(
            "confirmEmailChange", settings, coll, record, token=token, new_email=email
        )
    if template == "otp":
        return render_auth_email(
            "otp", settings, coll, record, otp="123456", otp_id="_PB_TEST_OTP_ID_"
        )
    if template == "login-alert":
        info = f"{now_datetime()} - TEST_IP TEST_USER_AGENT"
        return render_auth_email("authAlert", settings, coll, record, alert_info=info)
    raise ValueError(f"unknown template {template!r}")


async def send_test_email(app: App, template: str, email: str, collection: str = "") -> None:
    """See the module docstring."""
    errors: ValidationErrors = {}
    if collection:
        error = _length(collection, 1, 255)
        if error is None:
            found = app.schema.find(collection)
            if found is None or not found.is_auth:
                error = FieldError(
                    "validation_invalid_auth_collection",
                    "Must be a valid auth collection id or name.",
                )
        if error is not None:
            errors["collection"] = error
    error = email_error(email)
    if error is not None:
        errors["email"] = error
    if not template:
        errors["template"] = _required()
    elif template not in TEST_TEMPLATES:
        errors["template"] = FieldError("validation_in_invalid", "Must be a valid value.")
    _raise_if(errors, "Failed to send the test email.")
    coll = app.schema.find(collection or SUPERUSERS)
    if coll is None or not coll.is_auth:
        raise ApiError(404, "The requested resource wasn't found.")
    message = build_test_email(app, coll, template, email)
    try:
        await asyncio.to_thread(app.mailer.send_now, message)
    except MailerError as exc:
        raise ApiError(400, f"Failed to send the test email. Raw error: \n{exc}") from exc
