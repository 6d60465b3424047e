"""Multi-factor authentication sessions (`_mfas`): PocketBase's `checkMFA` and `core/mfa_*.go`.

Contract (functions that take a connection run inside the caller's transaction):

- `options(coll)` -> `MfaOptions(enabled, duration, rule)` (PocketBase's default 600 s).
- `wants_mfa(conn, schema, coll, record, info)`: whether `record` needs a second factor: an
  empty `mfa.rule` means everyone, else the rule must match the record as the login request
  `info` sees it (hidden fields allowed, no superuser shortcut); a rule that fails is an error
  (`ApiError` 400 "Failed to authenticate.").
- `check(conn, schema, coll, record, method, mfa_id, info, hooks)` -> `MfaOutcome`, for a login
  that succeeded with `method` (`password`, `otp`, `oauth2`; "" skips MFA): with MFA off, not
  wanted, or completed by `mfa_id` of a different method, `MfaOutcome()` (the login goes on;
  the used `_mfas` record is deleted). Without `mfa_id` a new `_mfas` record is made and its id
  is `outcome.mfa_id` (answer `MfaRequired`). A refusal is `outcome.error` (400: unknown or
  expired session, which is deleted; a session of another record; the same method twice):
  returned, not raised, so that the deletes it made are committed.
- `MfaRequired(mfa_id)`: the `ApiError` answered for a first factor: 401 with the body
  `{"mfaId": ...}` exactly (no `data`/`message`, as PocketBase writes it).
- `delete_expired(conn, schema)`: deletes the sessions older than their collection's
  `mfa.duration` and the orphaned ones; returns how many.
- `bind(hooks)` installs PocketBase's model hooks: a password change of an auth record deletes
  its sessions, and so does deleting the record.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from instance_runtime.core import otp, record_write, records, rules
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.errors import ApiError, bad_request
from instance_runtime.core.events import RecordEvent
from instance_runtime.core.models import Collection
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote

MFAS = "_mfas"
DEFAULT_DURATION = 600


@dataclass(frozen=True)
class MfaOptions:
    enabled: bool
    duration: int
    rule: str


def options(coll: Collection) -> MfaOptions:
    raw = coll.option_object("mfa")
    return MfaOptions(
        enabled=bool(raw.get("enabled")),
        duration=int(raw.get("duration") or DEFAULT_DURATION),
        rule=str(raw.get("rule") or ""),
    )


class MfaRequired(ApiError):
    """See the module docstring."""

    def __init__(self, mfa_id: str) -> None:
        super().__init__(401, "MFA required.")
        self.mfa_id = mfa_id

    def to_json(self) -> dict[str, Any]:
        return {"mfaId": self.mfa_id}


@dataclass(frozen=True)
class MfaOutcome:
    mfa_id: str = ""
    error: ApiError | None = None


def _mfas(schema: Schema) -> Collection:
    coll = schema.find(MFAS)
    assert coll is not None, "the _mfas collection is missing"
    return coll


def wants_mfa(
    conn: sqlite3.Connection, schema: Schema, coll: Collection, record: Record, info: RequestInfo
) -> bool:
    """See the module docstring."""
    rule = options(coll).rule
    if not rule:
        return True
    failed = bad_request("Failed to authenticate.")
    try:
        frag = rules.build_filter(schema, coll, rule, info, allow_hidden=True)
    except ApiError as exc:
        raise failed from exc
    table = quote(coll.name)
    sql = f"SELECT 1 FROM {table} {frag.joins} WHERE {table}.id = :_id AND ({frag.sql}) LIMIT 1"
    try:
        return conn.execute(sql, {**frag.params, "_id": record["id"]}).fetchone() is not None
    except sqlite3.Error as exc:
        raise failed from exc


def check(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    method: str,
    mfa_id: str,
    info: RequestInfo,
    hooks: AppHooks,
) -> MfaOutcome:
    """See the module docstring."""
    settings = options(coll)
    if not settings.enabled or not method:
        return MfaOutcome()
    if not wants_mfa(conn, schema, coll, record, info):
        return MfaOutcome()
    mfas = _mfas(schema)
    if not mfa_id:
        session = {"collectionRef": coll.id, "recordRef": record["id"], "method": method}
        saved = record_write.save(conn, schema, mfas, session, hooks=hooks)
        return MfaOutcome(mfa_id=str(saved["id"]))
    found = records.find(conn, mfas, mfa_id)
    if found is None or otp.has_expired(found, settings.duration):
        if found is not None:
            record_write.delete_cascade(conn, schema, mfas, mfa_id)
        return MfaOutcome(error=bad_request("Invalid or expired MFA session."))
    if found.get("recordRef") != record["id"] or found.get("collectionRef") != coll.id:
        return MfaOutcome(error=bad_request("Invalid MFA session."))
    if found.get("method") == method:
        return MfaOutcome(error=bad_request("A different authentication method is required."))
    record_write.delete_cascade(conn, schema, mfas, mfa_id)
    return MfaOutcome()


def delete_expired(conn: sqlite3.Connection, schema: Schema) -> int:
    """See the module docstring."""
    durations = {c.id: options(c).duration for c in schema.all() if c.is_auth}
    return otp.delete_stale(conn, schema, MFAS, durations)


def bind(hooks: AppHooks) -> None:
    """See the module docstring."""

    def on_update(e: RecordEvent) -> Any:
        result = e.next()
        old = e.original
        changed = old is not None and old.get("password") != e.record.get("password")
        if e.collection.is_auth and old is not None and changed:
            otp.delete_of_record(e.conn, MFAS, e.collection.id, str(old["id"]))
        return result

    def on_delete(e: RecordEvent) -> Any:
        result = e.next()
        if e.collection.is_auth:
            otp.delete_of_record(e.conn, MFAS, e.collection.id, str(e.record["id"]))
        return result

    hooks.on_record_update.bind(on_update, id="pfMfaPasswordChange", priority=99)
    hooks.on_record_delete.bind(on_delete, id="pfMfaRecordDelete", priority=99)
