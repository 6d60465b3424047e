"""OAuth2 logins of auth records (PocketBase's `auth-with-oauth2`), without HTTP: the form, the
code exchange, and finding, linking or creating the record.

Contract:

- `OAuth2Form.from_body(body)` binds the request body as Go's JSON decoder binds PocketBase's
  form (keys matched case-insensitively, an exact match first; the last key wins; `redirectUrl`
  is the old name of `redirectURL`); a value of the wrong type is `ApiError` 400 "An error
  occurred while loading the submitted data." with empty data. `validate(coll, form)` raises
  that 400 with PocketBase's field errors (`provider` required, at most 100 characters, one of
  the collection's `oauth2.providers`; `code` required).
- `await authenticate(app, coll, form, info, respond=...)` logs in as PocketBase 0.40 does:
  provider set-up failing is 500 "Failed to init provider NAME."; the exchange 400 "Failed to
  fetch OAuth2 token.", the user-info 400 "Failed to fetch OAuth2 user." (`fetch_auth_user`).
  The record is the one linked to (provider, provider's user id) in `_externalAuths`, else the
  request's own auth record of this collection, else the record with the provider's (verified)
  email, else a new one. Then `on_record_auth_with_oauth2_request` runs; its `next()`, in ONE
  write transaction:
  * a new record (never in `_superusers`: 400 "Failed to authenticate.") is created as
    `POST .../records` would create it (through `on_record_create_request`, the caller's auth,
    `createRule` with `@request.context` "oauth2" and `@request.body` the payload): `createData`
    plus the provider's email unless a non-empty one was given, `oauth2.mappedFields` `id`,
    `name`, `username` (only when that value passes the field's checks and is not taken) and
    `avatarURL` (the URL into a text/url field; a file field is skipped and logged: the runtime
    has no file fields yet), a random password unless one was given; `verified` when its email
    is the provider's. Its errors are the create's (400 "Failed to create record." with data,
    403 "Only superusers can perform this action.").
  * an existing record that is not verified loses its password (unless it is the caller's own
    auth) and every `_externalAuths` link; it gets the provider's email when it had none, and
    becomes verified when its email is empty or the provider's.
  * the `_externalAuths` link is made when missing. A write that fails here is 400 "Failed to
    authenticate." with its validation data.
  then `respond(login)` (the HTTP layer answers `{token, record, meta}`). Returns `OAuth2Login`:
  the record, the provider's user and `is_new`; `login.meta()` is PocketBase's `meta`.

The links are `core.external_auths`'; the redirect (`/api/oauth2-redirect`) and Apple's user
name are `core.oauth2_redirect`'s.
"""

from __future__ import annotations

import copy
import logging
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from instance_runtime.core import auth, external_auths, record_write, records
from instance_runtime.core import fields as fv
from instance_runtime.core.app import App
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.errors import ApiError, FieldError, bad_request, required
from instance_runtime.core.events import RecordAuthWithOAuth2RequestEvent, RecordRequestEvent
from instance_runtime.core.models import Collection
from instance_runtime.core.oauth2_redirect import pop_apple_name
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import SUPERUSERS, RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools import oauth2, security
from instance_runtime.tools.dbutils import quote
from instance_runtime.tools.oauth2 import (
    AuthUser,
    OAuth2Error,
    TokenExchangeError,
    UserInfoError,
    resolve_provider,
)

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("instance_runtime")

FORM_ERROR = "An error occurred while loading the submitted data."
AUTH_FAILED = "Failed to authenticate."
MAX_PROVIDER_LENGTH = 100
RANDOM_PASSWORD_LENGTH = 30
APPLE = "apple"


# --- the form ---------------------------------------------------------------------------------

# JSON key -> attribute, in the order of PocketBase's struct fields (a case-insensitive match
# takes the first of them).
_FORM_FIELDS = (
    ("createData", "create_data"),
    ("provider", "provider"),
    ("code", "code"),
    ("codeVerifier", "code_verifier"),
    ("redirectURL", "redirect_url"),
    ("redirectUrl", "redirect_url_legacy"),
)


@dataclass
class OAuth2Form:
    """The body of `auth-with-oauth2`."""

    provider: str = ""
    code: str = ""
    code_verifier: str = ""
    redirect_url: str = ""
    create_data: dict[str, Any] | None = None
    redirect_url_legacy: str = ""

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> OAuth2Form:
        """See the module docstring."""
        form = cls()
        for key, value in body.items():
            attr = _form_attribute(key)
            if attr is None or value is None:
                continue
            if attr == "create_data":
                if not isinstance(value, dict):
                    raise ApiError(400, FORM_ERROR)
                form.create_data = copy.deepcopy(value)
                continue
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
                value = value[0]  # a repeated form value: the first, as Go's form binding
            if not isinstance(value, str):
                raise ApiError(400, FORM_ERROR)
            setattr(form, attr, value)
        if form.redirect_url_legacy and not form.redirect_url:
            log.warning(
                "[recordAuthWithOAuth2] redirectUrl body param is deprecated and will be removed "
                "in the future. Please replace it with redirectURL."
            )
            form.redirect_url = form.redirect_url_legacy
        return form


def _form_attribute(key: str) -> str | None:
    for name, attr in _FORM_FIELDS:
        if key == name:
            return attr
    folded = key.casefold()
    for name, attr in _FORM_FIELDS:
        if folded == name.casefold():
            return attr
    return None


def oauth2_options(coll: Collection) -> dict[str, Any]:
    value = coll.options.get("oauth2")
    return value if isinstance(value, dict) else {}


def provider_config(coll: Collection, name: str) -> dict[str, Any] | None:
    """The first entry of the collection's `oauth2.providers` named `name`."""
    for config in oauth2_options(coll).get("providers") or []:
        if isinstance(config, dict) and config.get("name") == name:
            return config
    return None


def validate(coll: Collection, form: OAuth2Form) -> None:
    """See the module docstring."""
    errors: dict[str, Any] = {}
    if not form.provider:
        errors["provider"] = required()
    elif len(form.provider) > MAX_PROVIDER_LENGTH:
        errors["provider"] = FieldError(
            "validation_length_too_long",
            "The length must be no more than {{.max}}.",
            {"max": MAX_PROVIDER_LENGTH, "min": 0},
        )
    elif provider_config(coll, form.provider) is None:
        errors["provider"] = FieldError(
            "validation_invalid_provider",
            "Provider with name {{.name}} is missing or is not enabled.",
            {"name": form.provider},
        )
    if not form.code:
        errors["code"] = required()
    if errors:
        raise bad_request(FORM_ERROR, errors)


# --- the login --------------------------------------------------------------------------------


@dataclass
class OAuth2Login:
    """A completed OAuth2 login."""

    collection: Collection
    provider: str
    record: Record
    auth_user: AuthUser
    is_new: bool

    def meta(self) -> dict[str, Any]:
        """PocketBase's `meta` of the answer: the provider's user and `isNew`."""
        return {**self.auth_user.to_meta(), "isNew": self.is_new}


Respond = Callable[[OAuth2Login], Awaitable[None]]


@dataclass
class _Found:
    record: Record | None
    link_id: str = ""  # the `_externalAuths` row that led to the record
    stale_link_id: str = ""  # a row whose record is gone


async def fetch_user(
    coll: Collection, form: OAuth2Form, *, http: httpx.AsyncClient | None = None
) -> AuthUser:
    """The provider's user for the form's code (PocketBase's errors; see the docstring)."""
    config = provider_config(coll, form.provider) or {}
    try:
        resolve_provider(form.provider, config)
    except OAuth2Error as exc:
        raise ApiError(500, f"Failed to init provider {form.provider}") from exc
    try:
        return await oauth2.fetch_auth_user(
            form.provider, config, form.code, form.code_verifier, form.redirect_url, http=http
        )
    except TokenExchangeError as exc:
        log.debug("OAuth2 token exchange failed: %s", exc)
        raise ApiError(400, "Failed to fetch OAuth2 token.") from exc
    except UserInfoError as exc:
        log.debug("OAuth2 user-info failed: %s", exc)
        raise ApiError(400, "Failed to fetch OAuth2 user.") from exc


async def authenticate(
    app: App,
    coll: Collection,
    form: OAuth2Form,
    info: RequestInfo,
    *,
    respond: Respond | None = None,
    before_create: Callable[[], None] | None = None,
    http: httpx.AsyncClient | None = None,
) -> OAuth2Login:
    """See the module docstring. `info` is the request's (its `auth` is the caller);
    `before_create` runs before a record is created (the create's rate limit)."""
    validate(coll, form)
    user = await fetch_user(coll, form, http=http)
    if form.provider == APPLE and not user.name:
        name = pop_apple_name(app, form.code)
        if name is None:
            log.debug("Missing or already removed Apple user's name")
        else:
            user.name = name
    fallback = _own_auth(coll, info)

    def lookup(conn: sqlite3.Connection, schema: Schema) -> _Found:
        return _find(conn, coll, form.provider, user, fallback)

    found = await app.read(lookup)
    event = RecordAuthWithOAuth2RequestEvent(
        info, coll, form.provider, user, found.record, found.record is None, form.create_data
    )
    result: list[OAuth2Login] = []

    async def submit(e: RecordAuthWithOAuth2RequestEvent) -> None:
        record = await _submit(app, e, found, before_create)
        e.record = record
        login = OAuth2Login(e.collection, e.provider_name, record, e.oauth2_user, e.is_new_record)
        result.append(login)
        if respond is not None:
            await respond(login)

    await app.hooks.on_record_auth_with_oauth2_request.trigger(event, submit)
    if not result:
        raise bad_request(AUTH_FAILED)
    return result[0]


def _own_auth(coll: Collection, info: RequestInfo) -> Record | None:
    """The request's auth record when it belongs to `coll` (PocketBase's fallback record)."""
    if info.auth is None or info.auth_collection is None or info.auth_collection.id != coll.id:
        return None
    return {k: v for k, v in info.auth.items() if k not in ("collectionId", "collectionName")}


def _find(
    conn: sqlite3.Connection,
    coll: Collection,
    provider: str,
    user: AuthUser,
    fallback: Record | None,
) -> _Found:
    link = external_auths.find_link(conn, coll.id, provider, user.id)
    stale = ""
    if link is not None:
        record = records.find(conn, coll, link[1])
        if record is not None:
            return _Found(record, link_id=link[0])
        stale = link[0]  # PocketBase deletes links with their record; a stale one is ignored
    if fallback is not None:
        return _Found(fallback, stale_link_id=stale)
    if user.email:
        return _Found(auth.find_by_email(conn, coll, user.email), stale_link_id=stale)
    return _Found(None, stale_link_id=stale)


# --- creating or linking the record (one write) ------------------------------------------------


async def _submit(
    app: App,
    e: RecordAuthWithOAuth2RequestEvent,
    found: _Found,
    before_create: Callable[[], None] | None,
) -> Record:
    coll, user, hooks = e.collection, e.oauth2_user, app.hooks
    if e.record is not None:
        existing = e.record
        link_id = found.link_id if existing["id"] == (found.record or {}).get("id") else ""

        def link_existing(conn: sqlite3.Connection, schema: Schema) -> Record:
            return _update_and_link(conn, schema, hooks, e, existing, link_id, found.stale_link_id)

        return await app.write(link_existing)
    if coll.name == SUPERUSERS:
        log.debug("superusers are not allowed to sign-up with OAuth2")
        raise bad_request(AUTH_FAILED)

    def payload_of(conn: sqlite3.Connection, schema: Schema) -> dict[str, Any]:
        return create_payload(conn, coll, e.create_data, user)

    payload = await app.read(payload_of)
    if "password" not in payload:
        password = security.random_string(RANDOM_PASSWORD_LENGTH)
        payload["password"] = payload["passwordConfirm"] = password
    info = e.info
    create_info = RequestInfo(
        method="POST",
        context="oauth2",
        headers=dict(info.headers),
        body=payload,
        auth=info.auth,
        auth_collection=info.auth_collection,
    )
    if before_create is not None:
        before_create()
    created: list[Record] = []

    async def create(ev: RecordRequestEvent) -> None:
        def run(conn: sqlite3.Connection, schema: Schema) -> Record:
            return _create_and_link(conn, schema, hooks, e, ev.body, create_info, found)

        record = await app.write(run)
        created.append(record)
        ev.record = records.serialize(coll, record, create_info)

    event = RecordRequestEvent(create_info, coll, body=payload)
    await hooks.on_record_create_request.trigger(event, create)
    if not created:
        raise bad_request(AUTH_FAILED, None)
    return created[0]


def create_payload(
    conn: sqlite3.Connection, coll: Collection, create_data: dict[str, Any] | None, user: AuthUser
) -> dict[str, Any]:
    """The data of the record a sign-up creates (see the module docstring)."""
    payload = copy.deepcopy(create_data) if create_data else {}
    given_email = payload.get("email")
    if not isinstance(given_email, str) or not given_email:
        payload["email"] = user.email
    mapped = oauth2_options(coll).get("mappedFields") or {}
    id_field, name_field = str(mapped.get("id") or ""), str(mapped.get("name") or "")
    username_field = str(mapped.get("username") or "")
    avatar_field = str(mapped.get("avatarURL") or "")
    if id_field and id_field not in payload:
        payload[id_field] = user.id
    if name_field and name_field not in payload:
        payload[name_field] = user.name
    if (
        username_field
        and username_field not in payload
        and _can_assign_username(conn, coll, username_field, user.username)
    ):
        payload[username_field] = user.username
    if avatar_field and avatar_field not in payload and user.avatar_url:
        target = coll.field(avatar_field)
        if target is not None and target.type == "file":
            # PocketBase downloads it (tools.oauth2.safe_fetch) into the file field; this
            # runtime has no file fields yet, so the avatar is not stored.
            log.warning(
                "OAuth2 avatar not stored: file field %r is not supported yet (%s)",
                avatar_field,
                user.avatar_url,
            )
        else:
            payload[avatar_field] = user.avatar_url
    return payload


def _can_assign_username(
    conn: sqlite3.Connection, coll: Collection, field_name: str, username: str
) -> bool:
    """PocketBase's `oldCanAssignUsername`: the field exists, the value passes a text field's
    checks, and no record has it when a unique index covers the field."""
    target = coll.field(field_name)
    if target is None:
        return False
    if target.type == "text" and fv.validate(target, username) is not None:
        return False
    collate = auth.unique_index_collate(coll, field_name)
    if collate is not None:
        nocase = " COLLATE NOCASE" if collate.lower() == "nocase" else ""
        row = conn.execute(
            f"SELECT 1 FROM {quote(coll.name)} WHERE {quote(field_name)} = ?{nocase} LIMIT 1",
            (username,),
        ).fetchone()
        if row is not None:
            return False
    return True


def _create_and_link(
    conn: sqlite3.Connection,
    schema: Schema,
    hooks: AppHooks,
    e: RecordAuthWithOAuth2RequestEvent,
    payload: dict[str, Any],
    create_info: RequestInfo,
    found: _Found,
) -> Record:
    coll = e.collection
    record = record_write.create(conn, schema, coll, payload, create_info, hooks=hooks)
    if record.get("email") == e.oauth2_user.email and not record.get("verified"):
        record = _save(conn, schema, hooks, coll, {"verified": True}, original=record)
    _link(conn, schema, hooks, e, record, "", found.stale_link_id)
    return record


def _update_and_link(
    conn: sqlite3.Connection,
    schema: Schema,
    hooks: AppHooks,
    e: RecordAuthWithOAuth2RequestEvent,
    record: Record,
    link_id: str,
    stale_link_id: str,
) -> Record:
    coll, user, info = e.collection, e.oauth2_user, e.info
    current = records.find(conn, coll, str(record["id"]))
    if current is None:
        raise ApiError(404, "The requested resource wasn't found.")
    verified = bool(current.get("verified"))
    changes: dict[str, Any] = {}
    own = _own_auth(coll, info)
    if not verified and (own is None or own.get("id") != current["id"]):
        # an unverified record may have been made by someone else: its password goes
        password_field = coll.field("password")
        cost = int(password_field.opt("cost") or 0) if password_field is not None else 0
        random_password = security.random_string(RANDOM_PASSWORD_LENGTH)
        changes["password"] = security.hash_password(random_password, cost)
        changes["tokenKey"] = security.random_string(50)
    if not verified:
        external_auths.delete_links(conn, schema, hooks, coll, str(current["id"]))
        link_id = ""
    email = str(current.get("email") or "")
    if not email and user.email:
        changes["email"] = email = user.email
    if not verified and (not email or email == user.email):
        changes["verified"] = True
    if changes:
        current = _save(conn, schema, hooks, coll, changes, original=current)
    _link(conn, schema, hooks, e, current, link_id, stale_link_id)
    return current


def _save(
    conn: sqlite3.Connection,
    schema: Schema,
    hooks: AppHooks,
    coll: Collection,
    values: Record,
    *,
    original: Record | None = None,
) -> Record:
    """`record_write.save`, a validation failure answered as PocketBase's "Failed to
    authenticate." (with the same data)."""
    try:
        return record_write.save(conn, schema, coll, values, hooks=hooks, original=original)
    except ApiError as exc:
        _raise_as_auth_failure(exc)
        raise


def _raise_as_auth_failure(exc: ApiError) -> None:
    """A failed save is PocketBase's "Failed to authenticate." with its data; an error of a
    hook passes as it is (this returns)."""
    if exc.status == 400 and exc.message in (
        "Failed to create record.",
        "Failed to update record.",
    ):
        raise ApiError(400, AUTH_FAILED, exc.data) from exc


def _link(
    conn: sqlite3.Connection,
    schema: Schema,
    hooks: AppHooks,
    e: RecordAuthWithOAuth2RequestEvent,
    record: Record,
    link_id: str,
    stale_link_id: str,
) -> None:
    """Make the record's link to the provider's user unless `link_id` is it."""
    if stale_link_id:
        external_auths.delete_link(conn, schema, hooks, stale_link_id)
    if link_id:
        return
    try:
        external_auths.add_link(
            conn, schema, hooks, e.collection, str(record["id"]), e.provider_name, e.oauth2_user.id
        )
    except ApiError as exc:
        _raise_as_auth_failure(exc)
        raise
