"""Record auth: `auth-with-password`, `auth-refresh`, `auth-methods` of auth collections, and
`auth_response`, the answer of every successful login (PocketBase's `RecordAuthResponse`).

Contract: answers as PocketBase 0.40: `{"record": ..., "token": ...}` on success; a wrong
identity or password is 400 "Failed to authenticate."; an unknown collection 404 "Missing or
invalid collection context.", one that is not an auth collection 404 "Missing or invalid auth
collection context."; password auth off 403; refresh without a valid token 401, with another
collection's token 403; refresh of a token that is not refreshable (an impersonation) answers
that same token.

auth-with-password runs through `on_record_auth_with_password_request` (the record its identity
names, or None; `next()` checks the password and answers), auth-refresh through
`on_record_auth_refresh_request`.

`auth_response(app, coll, record, info, method, token=..., request=...)`, in PocketBase's order:
a superuser logging in from outside `settings.superuserIPs` is 403; the collection's `authRule`
must let the request (as it came, before the login) see the record (403 "The request doesn't
satisfy the collection requirements to authenticate."; a null rule refuses everyone but
superusers); then `on_record_auth_request` runs (with `meta`), whose final step applies MFA
(`core.mfa.check`, with `mfaId` from the query or the body; not for `refresh` and
`impersonate`): a first factor answers `mfa.MfaRequired` (401 `{"mfaId": ...}`), a refused
second one its 400; otherwise the record (enriched as the new auth sees it) and the token, and,
with `authAlert.enabled`, the login's origin is remembered in `_authOrigins` and a login from a
new place is mailed (`core.auth_origins`; not for `refresh` and `impersonate`).
`auth-methods` answers the collection's true state with PocketBase's legacy members
(`authProviders`, `usernamePassword`, `emailPassword`), picked by `fields` as PocketBase picks
every JSON answer (the SDK asks for `mfa,otp,password,oauth2`); each OAuth2 provider entry is
`tools.oauth2.auth_method_info` (a fresh state and PKCE pair per call; a provider it cannot set
up is left out, as PocketBase does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    check_collection_rate_limit,
    client_ip,
    get_app,
    json_response,
    read_body,
    request_info,
)
from instance_runtime.apis.records import collection_of, enrich
from instance_runtime.core import auth, auth_origins, mfa, otp, records
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, FieldError, bad_request, forbidden, unauthorized
from instance_runtime.core.events import (
    RecordAuthRefreshRequestEvent,
    RecordAuthRequestEvent,
    RecordAuthWithPasswordRequestEvent,
)
from instance_runtime.core.expand import pick_fields
from instance_runtime.core.fields import to_str
from instance_runtime.core.mails import render_auth_email
from instance_runtime.core.models import Collection
from instance_runtime.core.request_info import SUPERUSERS, RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools import oauth2, security
from instance_runtime.tools.client_ip import ip_in_list

log = logging.getLogger("instance_runtime")

NO_COLLECTION = "Missing or invalid collection context."
NOT_AUTH = "Missing or invalid auth collection context."
# Auth methods that never ask for a second factor (PocketBase passes "" for them).
_NO_MFA_METHODS = frozenset({"", "refresh", "impersonate"})


def auth_collection(app: App, request: Request, *tags: str) -> Collection:
    """The path's auth collection, after its rate limit `tags` (404s as PocketBase's)."""
    coll = collection_of(app, request, NO_COLLECTION)
    if tags:
        check_collection_rate_limit(request, app, coll, *tags)
    if not coll.is_auth:
        raise ApiError(404, NOT_AUTH)
    return coll


def _mfa_id(info: RequestInfo) -> str:
    return info.query.get("mfaId") or to_str(info.body.get("mfaId"))


async def auth_response(
    app: App,
    coll: Collection,
    record: dict[str, Any],
    info: RequestInfo,
    method: str,
    *,
    token: str = "",
    request: Request | None = None,
    meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `{token, record[, meta]}` answer of a login (see the module docstring); `token`
    defaults to a new refreshable auth token of `record`. Raises `ApiError` (`mfa.MfaRequired`
    included)."""
    original = dataclasses.replace(info)  # the request as it came, before it is logged in
    if coll.name == SUPERUSERS and request is not None:
        settings = app.settings.current
        allowed = settings.get("superuserIPs") or []
        if allowed and not ip_in_list(allowed, client_ip(request.scope, settings)):
            raise forbidden()
    rule = coll.options.get("authRule", "")
    rid = str(record["id"])

    def may_authenticate(conn: sqlite3.Connection, schema: Schema) -> bool:
        return records.check_rule(conn, schema, coll, rule, rid, original)

    # an empty rule lets every existing record in: the record was just read, so no query
    allowed = (
        rule == ""
        or original.is_superuser
        or await app.read(may_authenticate, inline_key=("authRule", coll.id))
    )
    if not allowed:
        raise forbidden("The request doesn't satisfy the collection requirements to authenticate.")
    info.auth = {**record, "collectionId": coll.id, "collectionName": coll.name}
    info.auth_collection = coll
    event = RecordAuthRequestEvent(
        info, coll, record, method, token or auth.new_auth_token(coll, record), meta
    )
    answer: dict[str, Any] = {}

    async def respond(e: RecordAuthRequestEvent) -> None:
        second = "" if e.auth_method in _NO_MFA_METHODS else e.auth_method
        if second and mfa.options(coll).enabled:

            def check(conn: sqlite3.Connection, schema: Schema) -> mfa.MfaOutcome:
                return mfa.check(
                    conn, schema, coll, e.record, second, _mfa_id(original), original, app.hooks
                )

            outcome = await app.write(check)
            if outcome.error is not None:
                raise outcome.error
            if outcome.mfa_id:
                raise mfa.MfaRequired(outcome.mfa_id)

        def run(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
            return enrich(conn, schema, coll, [e.record], info)[0]

        shape = ("auth", coll.id, original.query.get("expand", ""))  # short: inline first
        answer.update({"record": await app.read(run, inline_key=shape), "token": e.token})
        if second and request is not None and (coll.options.get("authAlert") or {}).get("enabled"):
            await _login_alert(app, coll, e.record, request)
        if e.meta:
            answer["meta"] = e.meta

    await app.hooks.on_record_auth_request.trigger(event, respond)
    return answer


async def _login_alert(
    app: App, coll: Collection, record: dict[str, Any], request: Request
) -> None:
    """Remember where `record` logged in from; mail the alert for a new place (PocketBase's
    `authAlert`: never for the first login; a failure is logged, never the login's)."""
    settings = app.settings.current
    ip = client_ip(request.scope, settings)
    agent = request.headers.get("user-agent", "")
    print_ = auth_origins.fingerprint(ip, agent)

    def remember(conn: sqlite3.Connection, schema: Schema) -> bool:
        return auth_origins.remember(conn, schema, app.hooks, coll, record, print_)

    try:
        owed = await app.write(remember)
    except ApiError:
        log.warning("failed to remember the login origin of %s", record.get("id"), exc_info=True)
        return
    if owed:
        info = auth_origins.alert_info(ip, agent)
        app.mailer.send(render_auth_email("authAlert", settings, coll, record, alert_info=info))


def _too_long(value: str) -> FieldError | None:
    if len(value) > 255:
        return FieldError(
            "validation_length_out_of_range",
            "The length must be between {{.min}} and {{.max}}.",
            {"min": 1, "max": 255},
        )
    return None


def _password_form_errors(
    coll: Collection, identity: str, password: str, identity_field: str
) -> dict[str, FieldError]:
    """PocketBase's auth-with-password form checks."""
    errors: dict[str, FieldError] = {}
    for name, value in (("identity", identity), ("password", password)):
        error = FieldError("validation_required", "Cannot be blank.") if not value else None
        if error is None:
            error = _too_long(value)
        if error is not None:
            errors[name] = error
    if identity_field:
        allowed = (coll.options.get("passwordAuth") or {}).get("identityFields") or []
        error = _too_long(identity_field)
        if error is None and identity_field not in allowed:
            error = FieldError("validation_in_invalid", "Must be a valid value.")
        if error is not None:
            errors["identityField"] = error
    return errors


async def auth_with_password(request: Request) -> Response:
    app = get_app(request)
    coll = auth_collection(app, request, "authWithPassword", "auth")
    if not (coll.options.get("passwordAuth") or {}).get("enabled", False):
        raise ApiError(403, "The collection is not configured to allow password authentication.")
    body = await read_body(request, message="An error occurred while loading the submitted data.")
    info = await request_info(request, app, body)
    identity, password = to_str(body.get("identity")), to_str(body.get("password"))
    identity_field = to_str(body.get("identityField"))
    errors = _password_form_errors(coll, identity, password, identity_field)
    if errors:
        raise bad_request("An error occurred while validating the submitted data.", errors)

    def find(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any] | None:
        return auth.find_for_password(conn, coll, identity, identity_field)

    info.context = "password"
    found = await app.read(find)
    event = RecordAuthWithPasswordRequestEvent(
        info, coll, found, identity, password, identity_field
    )

    async def login(e: RecordAuthWithPasswordRequestEvent) -> None:
        matches = await asyncio.to_thread(auth.password_matches, e.record, e.password)
        if e.record is None or not matches:
            raise ApiError(400, "Failed to authenticate.")
        e.answer = await auth_response(app, coll, e.record, info, "password", request=request)

    await app.hooks.on_record_auth_with_password_request.trigger(event, login)
    return json_response(event.answer)


def _request_token(request: Request) -> str:
    header = request.headers.get("authorization", "").strip()
    return header[7:].strip() if header[:7].lower() == "bearer " else header


async def auth_refresh(request: Request) -> Response:
    app = get_app(request)
    coll = collection_of(app, request, NO_COLLECTION)
    check_collection_rate_limit(request, app, coll, "authRefresh")
    info = await request_info(request, app)
    if info.auth is None or info.auth_collection is None:
        raise unauthorized()
    if info.auth_collection.id != coll.id:
        raise ApiError(403, "The request requires valid record authorization token.")
    record = {k: v for k, v in info.auth.items() if k not in ("collectionId", "collectionName")}
    token = _request_token(request)
    claims = security.parse_unverified(token) or {}
    if claims.get("refreshable") is True:
        token = ""  # a new one; a static (impersonation) token is answered as it is

    async def refresh(e: RecordAuthRefreshRequestEvent) -> None:
        e.answer = await auth_response(
            app, coll, e.record, info, "refresh", token=token, request=request
        )

    event = RecordAuthRefreshRequestEvent(info, coll, record)
    await app.hooks.on_record_auth_refresh_request.trigger(event, refresh)
    return json_response(event.answer)


def _providers(coll: Collection) -> list[dict[str, str]]:
    settings = coll.options.get("oauth2") or {}
    found: list[dict[str, str]] = []
    for config in settings.get("providers") or []:
        if not isinstance(config, dict):
            continue
        try:
            found.append(oauth2.auth_method_info(str(config.get("name") or ""), config))
        except Exception as exc:  # PocketBase skips a provider it cannot set up
            log.debug("Failed to setup OAuth2 provider %r: %s", config.get("name"), exc)
    return found


async def auth_methods(request: Request) -> Response:
    app = get_app(request)
    coll = auth_collection(app, request, "listAuthMethods")
    password_auth = coll.options.get("passwordAuth") or {}
    password_on = bool(password_auth.get("enabled"))
    identity_fields = list(password_auth.get("identityFields") or []) if password_on else []
    oauth2_on = bool((coll.options.get("oauth2") or {}).get("enabled"))
    providers = _providers(coll) if oauth2_on else []
    mfa_options, otp_options = mfa.options(coll), otp.options(coll)
    answer = {
        "password": {"identityFields": identity_fields, "enabled": password_on},
        "oauth2": {"providers": providers, "enabled": oauth2_on},
        "mfa": {
            "enabled": mfa_options.enabled,
            "duration": mfa_options.duration if mfa_options.enabled else 0,
        },
        "otp": {
            "enabled": otp_options.enabled,
            "duration": otp_options.duration if otp_options.enabled else 0,
        },
        "authProviders": [{**p, "logo": ""} for p in providers],
        "usernamePassword": password_on and "username" in identity_fields,
        "emailPassword": password_on and "email" in identity_fields,
    }
    # the SDK asks for `fields=mfa,otp,password,oauth2` (PocketBase picks any JSON answer)
    return json_response(pick_fields(answer, request.query_params.get("fields", "")))


routes = [
    Route("/api/collections/{collection}/auth-with-password", auth_with_password, methods=["POST"]),
    Route("/api/collections/{collection}/auth-refresh", auth_refresh, methods=["POST"]),
    Route("/api/collections/{collection}/auth-methods", auth_methods, methods=["GET"]),
]
