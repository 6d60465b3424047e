"""Auth records: tokens (HS256, per-record key), password login, superuser upsert.

Contract:

- `new_token(coll, record, kind, claims, duration)` signs PocketBase's token of `kind` (`auth`,
  `file`, `verification`, `passwordReset`, `emailChange`: `{collectionId, id, type, ...claims}`)
  with `record.tokenKey + coll.<kind>Token.secret`, for `duration` seconds or the collection's
  `<kind>Token.duration`; so changing a record's `tokenKey` (any password change) revokes all
  its tokens. `new_auth_token(coll, record)` is the refreshable auth token of a login.
- `verify_token(conn, schema, token, kind="auth")` -> (collection, record) of a valid token of
  that kind, else None.
- `unique_index_collate(coll, column)`: the collation of the first single-column unique index
  on `column` ("" for none given), None without such an index.
- `find_by_field(conn, coll, field, value, nocase)` and `find_by_email(conn, coll, email)`
  (PocketBase's `FindAuthRecordByEmail`: case-insensitive only when the unique index on
  `email` is `COLLATE NOCASE`).
- `find_for_password(conn, coll, identity, identity_field)` -> the record or None, as
  PocketBase's auth-with-password looks it up: the given identity field, else every identity
  field with email first (skipped when the identity is not an email), each only with a
  single-column unique index (`COLLATE NOCASE` from it); `password_matches(record, password)`
  checks it (a missing record still costs one bcrypt check).
- `upsert_superuser(conn, schema, email, password)` creates or updates a `_superusers` record.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Literal

from instance_runtime.core import fields as fv
from instance_runtime.core.errors import bad_request
from instance_runtime.core.models import Collection, now_datetime
from instance_runtime.core.records import Record, find, row_to_record, select_columns
from instance_runtime.core.request_info import SUPERUSERS
from instance_runtime.core.schema import Schema
from instance_runtime.tools import security
from instance_runtime.tools.dbutils import parse_index, quote

_DUMMY_HASH = security.hash_password("pocketfleet-dummy-password")


TokenKind = Literal["auth", "file", "verification", "passwordReset", "emailChange"]
_DEFAULT_DURATIONS = {
    "auth": 604800,
    "file": 180,
    "verification": 259200,
    "passwordReset": 1800,
    "emailChange": 1800,
}


def _signing_key(coll: Collection, record: Record, kind: TokenKind) -> str:
    secret = coll.option_object(f"{kind}Token").get("secret", "")
    return str(record.get("tokenKey", "")) + str(secret)


def new_token(
    coll: Collection,
    record: Record,
    kind: TokenKind,
    claims: dict[str, Any] | None = None,
    duration: int = 0,
) -> str:
    """See the module docstring."""
    payload = {"collectionId": coll.id, "id": record["id"], "type": kind, **(claims or {})}
    if not duration:
        option = coll.option_object(f"{kind}Token")
        duration = int(option.get("duration") or _DEFAULT_DURATIONS[kind])
    return security.new_jwt(payload, _signing_key(coll, record, kind), duration)


def new_auth_token(coll: Collection, record: Record) -> str:
    return new_token(coll, record, "auth", {"refreshable": True})


def verify_token(
    conn: sqlite3.Connection, schema: Schema, token: str, kind: TokenKind = "auth"
) -> tuple[Collection, Record] | None:
    """See the module docstring."""
    claims = security.parse_unverified(token)
    if not claims or claims.get("type") != kind:
        return None
    coll = schema.find(str(claims.get("collectionId", "")))
    if coll is None or not coll.is_auth or coll.id != claims.get("collectionId"):
        return None
    record = find(conn, coll, str(claims.get("id", "")))
    if record is None:
        return None
    if security.parse_jwt(token, _signing_key(coll, record, kind)) is None:
        return None
    return coll, record


def unique_index_collate(coll: Collection, column: str) -> str | None:
    """See the module docstring."""
    for raw in coll.indexes:
        index = parse_index(raw)
        if (
            index.unique
            and len(index.columns) == 1
            and index.columns[0].name.casefold() == (column.casefold())
        ):
            return index.columns[0].collate
    return None


def find_by_field(
    conn: sqlite3.Connection, coll: Collection, field: str, value: str, *, nocase: bool
) -> Record | None:
    """See the module docstring."""
    collate = " COLLATE NOCASE" if nocase else ""
    row = conn.execute(
        f"SELECT {select_columns(coll)} FROM {quote(coll.name)} "
        f"WHERE {quote(field)} = ?{collate} LIMIT 1",
        (value,),
    ).fetchone()
    return None if row is None else row_to_record(coll, coll.field_names(), row)


def find_by_email(conn: sqlite3.Connection, coll: Collection, email: str) -> Record | None:
    """See the module docstring."""
    if not coll.is_auth or coll.field("email") is None:
        return None
    nocase = (unique_index_collate(coll, "email") or "").lower() == "nocase"
    return find_by_field(conn, coll, "email", email, nocase=nocase)


def identity_fields(coll: Collection) -> list[str]:
    """`passwordAuth.identityFields`, email first (PocketBase tries it first)."""
    names = list((coll.options.get("passwordAuth") or {}).get("identityFields") or [])
    return sorted(names, key=lambda name: name != "email")


def find_for_password(
    conn: sqlite3.Connection, coll: Collection, identity: str, identity_field: str = ""
) -> Record | None:
    """The record `identity` names, looked up as auth-with-password does (module docstring)."""
    for name in [identity_field] if identity_field else identity_fields(coll):
        if name == "email" and not fv.is_email(identity):
            continue
        collate = unique_index_collate(coll, name)
        if collate is None or coll.field(name) is None:
            continue
        record = find_by_field(conn, coll, name, identity, nocase=collate.lower() == "nocase")
        if record is not None:
            return record
    return None


def password_matches(record: Record | None, password: str) -> bool:
    """Whether `password` is `record`'s; without a record one bcrypt check is still made, so
    that an unknown identity takes as long as a wrong password."""
    if record is None:
        security.check_password(password, _DUMMY_HASH)
        return False
    return security.check_password(password, str(record.get("password", "")))


def upsert_superuser(conn: sqlite3.Connection, schema: Schema, email: str, password: str) -> str:
    """Create or update the superuser `email`; returns its id. Raises `ApiError` (400)."""
    coll = schema.find(SUPERUSERS)
    assert coll is not None, "the _superusers collection is missing"
    email_field = coll.field("email")
    password_field = coll.field("password")
    assert email_field is not None and password_field is not None
    errors = {}
    email_err = fv.validate(email_field, email)
    if email_err is not None:
        errors["email"] = email_err
    password_err = fv.validate_password(password_field, password)
    if password_err is not None:
        errors["password"] = password_err
    if errors:
        raise bad_request("Failed to upsert superuser.", errors)
    hashed = security.hash_password(password, int(password_field.opt("cost") or 0))
    token_key = security.random_string(50)
    now = now_datetime()
    row = conn.execute(
        f"SELECT id FROM {quote(coll.name)} WHERE email = ? COLLATE NOCASE", (email,)
    ).fetchone()
    if row is not None:
        conn.execute(
            f"UPDATE {quote(coll.name)} SET password = ?, tokenKey = ?, updated = ? WHERE id = ?",
            (hashed, token_key, now, row[0]),
        )
        return str(row[0])
    rid = security.new_record_id()
    conn.execute(
        f"INSERT INTO {quote(coll.name)} (id, email, password, tokenKey, emailVisibility, "
        "verified, created, updated) VALUES (?, ?, ?, ?, 0, 1, ?, ?)",
        (rid, email, hashed, token_key, now, now),
    )
    return rid
