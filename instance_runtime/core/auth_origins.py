"""`_authOrigins`: where each auth record has logged in from, and the new-login alert
(PocketBase's `authAlert` in `apis/record_helpers.go` and `core/auth_origin_*.go`).

Contract (in the caller's write transaction; rows through the model hooks as `app.Save`):

- `fingerprint(ip, user_agent)` is PocketBase's: MD5 of the address and the user agent (cut at
  200 characters with `...`); `alert_info(ip, user_agent)` the `{ALERT_INFO}` of the mail.
- `remember(conn, schema, hooks, coll, record, fingerprint)` records a login: a known origin is
  saved again (its `updated` moves), a new one is added, and only the newest 5 are kept. It
  answers whether the login alert is owed: a new origin that is not the record's first and a
  record with an email.
- `bind(hooks)`: a password change deletes the record's origins (every other place is "new"
  again); deleting an auth record deletes its origins.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

from instance_runtime.core import record_write
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.events import RecordEvent
from instance_runtime.core.models import Collection, now_datetime
from instance_runtime.core.records import Record, find
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote

AUTH_ORIGINS = "_authOrigins"
MAX_ORIGINS = 5


def _cut_agent(user_agent: str) -> str:
    return user_agent[:200] + "..." if len(user_agent) > 200 else user_agent


def fingerprint(ip: str, user_agent: str) -> str:
    """See the module docstring."""
    return hashlib.md5((ip + _cut_agent(user_agent)).encode()).hexdigest()


def alert_info(ip: str, user_agent: str) -> str:
    """See the module docstring."""
    return f"{now_datetime()} - {ip} {_cut_agent(user_agent)}"


def _origins(schema: Schema) -> Collection:
    origins = schema.find(AUTH_ORIGINS)
    if origins is None:
        raise RuntimeError("the _authOrigins collection is missing")
    return origins


def _of_record(conn: sqlite3.Connection, coll_id: str, record_id: str) -> list[tuple[str, str]]:
    """(id, fingerprint) of the record's origins, newest first (PocketBase's order)."""
    return [
        (str(row[0]), str(row[1]))
        for row in conn.execute(
            f"SELECT id, fingerprint FROM {quote(AUTH_ORIGINS)} "
            "WHERE collectionRef = ? AND recordRef = ? ORDER BY created DESC, rowid DESC",
            (coll_id, record_id),
        )
    ]


def remember(
    conn: sqlite3.Connection,
    schema: Schema,
    hooks: AppHooks,
    coll: Collection,
    record: Record,
    print_: str,
) -> bool:
    """See the module docstring."""
    origins_coll = _origins(schema)
    origins = _of_record(conn, coll.id, str(record["id"]))
    known = next((oid for oid, fp in origins if fp == print_), None)
    if known is not None:
        stored = find(conn, origins_coll, known)
        if stored is not None:
            record_write.save(conn, schema, origins_coll, {}, hooks=hooks, original=stored)
        return False
    if len(origins) >= MAX_ORIGINS:
        for oid, _fp in origins[MAX_ORIGINS - 1 :]:
            _delete(conn, schema, hooks, oid)
    values = {"collectionRef": coll.id, "recordRef": str(record["id"]), "fingerprint": print_}
    record_write.save(conn, schema, origins_coll, values, hooks=hooks)
    return bool(origins) and bool(record.get("email"))


def _delete(conn: sqlite3.Connection, schema: Schema, hooks: AppHooks, origin_id: str) -> None:
    origins_coll = _origins(schema)
    row = find(conn, origins_coll, origin_id)
    if row is not None:
        record_write.remove(conn, schema, origins_coll, row, hooks=hooks)


def delete_of_record(
    conn: sqlite3.Connection, schema: Schema, hooks: AppHooks, coll: Collection, record_id: str
) -> None:
    for origin_id, _fp in _of_record(conn, coll.id, record_id):
        _delete(conn, schema, hooks, origin_id)


def bind(hooks: AppHooks) -> None:
    """See the module docstring."""

    def on_update(e: RecordEvent) -> Any:
        result = e.next()
        old = (e.original or {}).get("password")
        if e.collection.is_auth and old != e.record.get("password"):
            delete_of_record(e.conn, e.schema, hooks, e.collection, str(e.record["id"]))
        return result

    def on_delete(e: RecordEvent) -> Any:
        result = e.next()
        if e.collection.is_auth:
            delete_of_record(e.conn, e.schema, hooks, e.collection, str(e.record["id"]))
        return result

    hooks.on_record_update.bind(on_update, id="authOrigins.passwordChange", priority=99)
    hooks.on_record_delete.bind(on_delete, id="authOrigins.recordRef", priority=99)
