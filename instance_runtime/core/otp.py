"""One-time passwords of auth records (`_otps`), as PocketBase's `core/otp_*.go` keeps them.

Contract (every function that takes a connection runs inside the caller's transaction):

- `options(coll)` -> `OtpOptions(enabled, duration, length)` of an auth collection (PocketBase's
  defaults 180 s and 8 digits when unset).
- `new_password(length)`: `length` random digits.
- `issue(conn, schema, coll, record, password, hooks)` -> `(otp, created)`: PocketBase's
  request-otp: when the record already has more than 9 unexpired OTPs the newest is reused
  (`created` False: PocketBase then sends no mail); otherwise a new `_otps` record holding the
  bcrypt hash of `password` (through the model hooks, as `app.Save`).
- `find(conn, schema, otp_id)` -> the `_otps` record or None; `has_expired(otp, duration)`:
  more than `duration` seconds since it was created; `password_matches(otp, password)`.
- `mark_sent(conn, schema, otp_id, to, hooks)`: stores `sentTo` once the mail was delivered
  (only when still empty, as PocketBase's `mails.SendRecordOTP`).
- `verify_by_otp(conn, schema, coll, record, otp, hooks)` -> the record after a successful OTP
  login: an OTP sent to its current e-mail marks it verified and, unless MFA is on, gives it a
  random password (and a new `tokenKey`), as PocketBase does against pre-hijacked accounts.
- `delete(conn, schema, otp_id)`; `delete_expired(conn, schema)` deletes, for every auth
  collection, the OTPs older than its `otp.duration` (enabled or not) and those whose record
  or collection is gone; returns how many.
- `bind(hooks)` installs PocketBase's model hooks: a change of an auth record's `tokenKey`
  deletes its OTPs, and deleting an auth record deletes them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from instance_runtime.core import record_write, records
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.events import RecordEvent
from instance_runtime.core.models import Collection, format_datetime
from instance_runtime.core.records import Record
from instance_runtime.core.schema import Schema
from instance_runtime.tools import security
from instance_runtime.tools.dbutils import quote

OTPS = "_otps"
DIGITS = "1234567890"
DEFAULT_DURATION = 180
DEFAULT_LENGTH = 8
# PocketBase reuses the newest OTP once a record has more unexpired ones than this.
MAX_RECENT = 9
_PASSWORD_COST = 8  # the `_otps.password` field's cost


@dataclass(frozen=True)
class OtpOptions:
    enabled: bool
    duration: int
    length: int


def options(coll: Collection) -> OtpOptions:
    raw = coll.option_object("otp")
    return OtpOptions(
        enabled=bool(raw.get("enabled")),
        duration=int(raw.get("duration") or DEFAULT_DURATION),
        length=int(raw.get("length") or DEFAULT_LENGTH),
    )


def _otps(schema: Schema) -> Collection:
    coll = schema.find(OTPS)
    assert coll is not None, "the _otps collection is missing"
    return coll


def new_password(length: int) -> str:
    return security.random_string(length, DIGITS)


def _parse_created(value: Any) -> datetime | None:
    text = str(value or "").removesuffix("Z")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def has_expired(item: Record, duration: int, now: datetime | None = None) -> bool:
    """More than `duration` seconds since `item` (an `_otps` or `_mfas` record) was created."""
    created = _parse_created(item.get("created"))
    if created is None:
        return True
    return (now or datetime.now(UTC)) - created > timedelta(seconds=duration)


def records_of(
    conn: sqlite3.Connection, ref_coll: Collection, collection_id: str, record_id: str
) -> list[Record]:
    """The rows of `ref_coll` (`_otps` / `_mfas`) of one auth record, newest first."""
    rows = conn.execute(
        f"SELECT {records.select_columns(ref_coll)} FROM {quote(ref_coll.name)} "
        "WHERE collectionRef = ? AND recordRef = ? ORDER BY created DESC",
        (collection_id, record_id),
    ).fetchall()
    names = ref_coll.field_names()
    return [records.row_to_record(ref_coll, names, row) for row in rows]


def issue(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    password: str,
    hooks: AppHooks,
) -> tuple[Record, bool]:
    """See the module docstring."""
    otps = _otps(schema)
    existing = records_of(conn, otps, coll.id, str(record["id"]))
    duration = options(coll).duration
    recent = sum(1 for item in existing if not has_expired(item, duration))
    if recent > MAX_RECENT:
        return existing[0], False
    otp = {
        "collectionRef": coll.id,
        "recordRef": record["id"],
        "password": security.hash_password(password, _PASSWORD_COST),
    }
    return record_write.save(conn, schema, otps, otp, hooks=hooks), True


def find(conn: sqlite3.Connection, schema: Schema, otp_id: str) -> Record | None:
    return records.find(conn, _otps(schema), otp_id) if otp_id else None


def password_matches(otp: Record, password: str) -> bool:
    return security.check_password(password, str(otp.get("password") or ""))


def mark_sent(
    conn: sqlite3.Connection, schema: Schema, otp_id: str, to: str, hooks: AppHooks
) -> None:
    """See the module docstring."""
    otp = find(conn, schema, otp_id)
    if otp is None or otp.get("sentTo") or not to:
        return
    record_write.save(conn, schema, _otps(schema), {"sentTo": to}, hooks=hooks, original=otp)


def verify_by_otp(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    item: Record,
    hooks: AppHooks,
) -> Record:
    """See the module docstring."""
    sent_to = str(item.get("sentTo") or "")
    if record.get("verified") or not sent_to or record.get("email") != sent_to:
        return record
    change: dict[str, Any] = {"verified": True}
    if not coll.option_object("mfa").get("enabled"):
        password_field = coll.field("password")
        cost = int(password_field.opt("cost") or 0) if password_field is not None else 0
        change["password"] = security.hash_password(security.random_string(30), cost)
        change["tokenKey"] = security.random_string(50)
    return record_write.save(conn, schema, coll, change, hooks=hooks, original=record)


def delete(conn: sqlite3.Connection, schema: Schema, otp_id: str) -> None:
    record_write.delete_cascade(conn, schema, _otps(schema), otp_id)


def delete_of_record(
    conn: sqlite3.Connection, table: str, collection_id: str, record_id: str
) -> None:
    """Delete the `_otps` / `_mfas` rows (`table`) of one auth record."""
    conn.execute(
        f"DELETE FROM {quote(table)} WHERE collectionRef = ? AND recordRef = ?",
        (collection_id, record_id),
    )


def delete_stale(
    conn: sqlite3.Connection, schema: Schema, table: str, durations: dict[str, int]
) -> int:
    """Delete the rows of `table` (`_otps` / `_mfas`) older than their collection's duration
    (`durations`: auth collection id -> seconds) or whose collection or record is gone."""
    deleted = 0
    known = list(durations)
    marks = ", ".join("?" for _ in known) or "NULL"
    deleted += conn.execute(
        f"DELETE FROM {quote(table)} WHERE collectionRef NOT IN ({marks})", known
    ).rowcount
    now = datetime.now(UTC)
    for coll_id, duration in durations.items():
        coll = schema.find(coll_id)
        assert coll is not None
        oldest = format_datetime(now - timedelta(seconds=duration))
        deleted += conn.execute(
            f"DELETE FROM {quote(table)} WHERE collectionRef = ? AND (created < ? OR recordRef "
            f"NOT IN (SELECT id FROM {quote(coll.name)}))",
            (coll_id, oldest),
        ).rowcount
    return deleted


def delete_expired(conn: sqlite3.Connection, schema: Schema) -> int:
    """See the module docstring."""
    durations = {c.id: options(c).duration for c in schema.all() if c.is_auth}
    return delete_stale(conn, schema, OTPS, durations)


def bind(hooks: AppHooks) -> None:
    """See the module docstring."""

    def on_update(e: RecordEvent) -> Any:
        result = e.next()
        old = e.original
        changed = old is not None and old.get("tokenKey") != e.record.get("tokenKey")
        if e.collection.is_auth and old is not None and changed:
            delete_of_record(e.conn, OTPS, e.collection.id, str(old["id"]))
        return result

    def on_delete(e: RecordEvent) -> Any:
        result = e.next()
        if e.collection.is_auth:
            delete_of_record(e.conn, OTPS, e.collection.id, str(e.record["id"]))
        return result

    hooks.on_record_update.bind(on_update, id="pfOtpTokenKeyChange", priority=99)
    hooks.on_record_delete.bind(on_delete, id="pfOtpRecordDelete", priority=99)
