"""What each realtime subscriber gets of one record event (PocketBase's `realtimeBroadcastRecord`).

Contract (no I/O but the given connections; nothing here sends):

- `candidates(coll, record_id, clients)` are the client topics an event of that record concerns,
  each with the rule that judges it: `COLL/ID` -> `viewRule`, `COLL/*` and the deprecated
  `COLL` -> `listRule`, the collection named by name or by id; the client's auth as it holds it
  now and the topic's options make the `RequestInfo` (context `realtime`) it is judged with.
- `accessible(conn, schema, coll, record_id, found)` keeps those that pass: the rule, then the
  topic's `filter` (PocketBase's `realtimeCanAccessRecord`; a filter on superuser-only fields
  from a non-superuser, or any error, refuses).
- `payloads(conn, schema, coll, record, action, passed)` turns them into messages: the record
  with the topic's `expand` and `fields` (`apis.records.enrich`; what cannot be expanded or
  picked is left out as PocketBase does) as `{record, action}`, named after the topic.
- What a rule, a filter or `enrich` can see of a candidate is its `key` (the auth's collection
  and id, the topic's query and headers): candidates of one event with the same key are
  judged, and their payload built, once.
- `messages(...)` is the three on one connection. A delete is judged on another connection
  than its payload is built on (see `apis.realtime`), hence the split.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson

from instance_runtime.apis.base import Auth
from instance_runtime.apis.records import enrich
from instance_runtime.core import rules
from instance_runtime.core.errors import ApiError
from instance_runtime.core.field_resolver import superuser_only_violation
from instance_runtime.core.models import Collection
from instance_runtime.core.realtime import Client, Message, SubscriptionOptions
from instance_runtime.core.records import Record, check_rule
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.tools.dbutils import quote

AUTH_KEY = "auth"

Outgoing = list[tuple[Client, Message]]


@dataclass
class Candidate:
    """One topic of one client that an event concerns, and what judges it."""

    client: Client
    topic: str
    rule: str | None
    info: RequestInfo

    @property
    def key(self) -> tuple[Any, ...]:
        info = self.info
        auth = info.auth_collection.id if info.auth_collection is not None else ""
        return (
            auth,
            info.auth_id,
            tuple(sorted(info.query.items())),
            tuple(sorted(info.headers.items())),
        )


def request_info_for(auth: Auth | None, options: SubscriptionOptions) -> RequestInfo:
    """What rules and `enrich` see of a client's topic: its auth, the topic's options."""
    info = RequestInfo(
        method="GET", context="realtime", query=dict(options.query), headers=dict(options.headers)
    )
    if auth is not None:
        coll, record = auth
        info.auth = {**record, "collectionId": coll.id, "collectionName": coll.name}
        info.auth_collection = coll
    return info


def candidates(coll: Collection, record_id: str, clients: list[Client]) -> list[Candidate]:
    """See the module docstring."""
    by_prefix = (
        (f"{coll.name}/{record_id}?", coll.viewRule),
        (f"{coll.id}/{record_id}?", coll.viewRule),
        (f"{coll.name}/*?", coll.listRule),
        (f"{coll.id}/*?", coll.listRule),
        (f"{coll.name}?", coll.listRule),
        (f"{coll.id}?", coll.listRule),
    )
    out: list[Candidate] = []
    for client in clients:
        if client.discarded:
            continue
        auth: Auth | None = client.store.get(AUTH_KEY)
        for prefix, rule in by_prefix:
            for topic, options in client.subscriptions_with(prefix).items():
                out.append(Candidate(client, topic, rule, request_info_for(auth, options)))
    return out


def can_access(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    rule: str | None,
    record_id: str,
    info: RequestInfo,
) -> bool:
    """The rule, then the topic's `filter` (PocketBase's `realtimeCanAccessRecord`)."""
    try:
        if not check_rule(conn, schema, coll, rule, record_id, info):
            return False
        flt = info.query.get("filter", "")
        if not flt:
            return True
        if not info.is_superuser and superuser_only_violation(flt) is not None:
            return False
        frag = rules.build_filter(schema, coll, flt, info, allow_hidden=False)
        table = quote(coll.name)
        sql = f"SELECT 1 FROM {table} {frag.joins} WHERE {table}.id = :_id AND ({frag.sql}) LIMIT 1"
        return conn.execute(sql, {**frag.params, "_id": record_id}).fetchone() is not None
    except (ApiError, sqlite3.Error, ValueError):
        return False


def accessible(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record_id: str,
    found: list[Candidate],
) -> list[Candidate]:
    """See the module docstring."""
    judged: dict[tuple[Any, ...], bool] = {}
    out: list[Candidate] = []
    for c in found:
        key = (c.rule, c.key)
        passes = judged.get(key)
        if passes is None:
            passes = judged[key] = can_access(conn, schema, coll, c.rule, record_id, c.info)
        if passes:
            out.append(c)
    return out


def _payload(
    conn: sqlite3.Connection, schema: Schema, coll: Collection, record: Record, info: RequestInfo
) -> dict[str, Any] | None:
    try:
        return enrich(conn, schema, coll, [record], info)[0]
    except (ApiError, sqlite3.Error, ValueError):
        pass
    # PocketBase sends the record without what it could not expand or pick
    info.query.pop("expand", None)
    try:
        return enrich(conn, schema, coll, [record], info)[0]
    except (ApiError, sqlite3.Error, ValueError):
        info.query.pop("fields", None)
    try:
        return enrich(conn, schema, coll, [record], info)[0]
    except (ApiError, sqlite3.Error, ValueError):
        return None


def payloads(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    action: str,
    passed: list[Candidate],
) -> Outgoing:
    """See the module docstring."""
    out: Outgoing = []
    built: dict[tuple[Any, ...], bytes | None] = {}
    for c in passed:
        key = c.key
        if key in built:
            body = built[key]
        else:
            data = _payload(conn, schema, coll, record, c.info)
            body = built[key] = (
                None if data is None else orjson.dumps({"record": data, "action": action})
            )
        if body is not None:
            out.append((c.client, Message(c.topic, body)))
    return out


def messages(
    conn: sqlite3.Connection,
    schema: Schema,
    coll: Collection,
    record: Record,
    action: str,
    clients: list[Client],
) -> Outgoing:
    """What each client gets of one record event (see the module docstring)."""
    rid = str(record.get("id", ""))
    found = candidates(coll, rid, clients)
    if not found:
        return []
    return payloads(conn, schema, coll, record, action, accessible(conn, schema, coll, rid, found))
