"""`_externalAuths`: the links between auth records and OAuth2 providers' users (PocketBase's
`core/external_auth_*.go`).

Contract (every function runs inside the caller's write transaction, or a read for
`find_link`; rows go through the model hooks as PocketBase's `app.Save`/`app.Delete`):

- `find_link(conn, coll_id, provider, provider_id)` -> (id, recordRef) of the newest link of
  the provider's user to a record of collection `coll_id` (an empty provider id never
  matches), or None.
- `add_link(conn, schema, hooks, coll, record_id, provider, provider_id)` saves a new link;
  `ApiError` 400 when it does not validate (a record already linked to that provider, or the
  provider's user already linked: "Value must be unique." on the index's columns).
- `delete_link(conn, schema, hooks, link_id)`; `delete_links(conn, schema, hooks, coll,
  record_id)` deletes every link of a record and answers how many there were.
- `bind(hooks)` installs PocketBase's model hooks: deleting an auth record deletes its links;
  an update that makes an auth record verified deletes its links and, when it had some, renews
  its `tokenKey` (its older tokens stop working).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from instance_runtime.core import record_write, records
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.events import RecordEvent
from instance_runtime.core.models import Collection
from instance_runtime.core.schema import Schema
from instance_runtime.tools import security
from instance_runtime.tools.dbutils import quote

EXTERNAL_AUTHS = "_externalAuths"


def _links(schema: Schema) -> Collection:
    links = schema.find(EXTERNAL_AUTHS)
    if links is None:
        raise RuntimeError("the _externalAuths collection is missing")
    return links


def find_link(
    conn: sqlite3.Connection, coll_id: str, provider: str, provider_id: str
) -> tuple[str, str] | None:
    """See the module docstring."""
    row = conn.execute(
        f"SELECT id, recordRef FROM {quote(EXTERNAL_AUTHS)} WHERE providerId != '' "
        "AND collectionRef = ? AND provider = ? AND providerId = ? "
        "ORDER BY created DESC LIMIT 1",
        (coll_id, provider, provider_id),
    ).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def add_link(
    conn: sqlite3.Connection,
    schema: Schema,
    hooks: AppHooks,
    coll: Collection,
    record_id: str,
    provider: str,
    provider_id: str,
) -> dict[str, Any]:
    """See the module docstring; the new row."""
    values = {
        "collectionRef": coll.id,
        "recordRef": record_id,
        "provider": provider,
        "providerId": provider_id,
    }
    return record_write.save(conn, schema, _links(schema), values, hooks=hooks)


def delete_link(conn: sqlite3.Connection, schema: Schema, hooks: AppHooks, link_id: str) -> None:
    """See the module docstring (a missing row is no error)."""
    links = _links(schema)
    row = records.find(conn, links, link_id)
    if row is not None:
        record_write.remove(conn, schema, links, row, hooks=hooks)


def delete_links(
    conn: sqlite3.Connection, schema: Schema, hooks: AppHooks, coll: Collection, record_id: str
) -> int:
    """See the module docstring."""
    ids = [
        str(row[0])
        for row in conn.execute(
            f"SELECT id FROM {quote(EXTERNAL_AUTHS)} WHERE collectionRef = ? AND recordRef = ? "
            "ORDER BY created DESC",
            (coll.id, record_id),
        )
    ]
    for link_id in ids:
        delete_link(conn, schema, hooks, link_id)
    return len(ids)


def bind(hooks: AppHooks) -> None:
    """See the module docstring."""

    def on_delete(e: RecordEvent) -> Any:
        result = e.next()
        if e.collection.is_auth:
            delete_links(e.conn, e.schema, hooks, e.collection, str(e.record["id"]))
        return result

    def on_update(e: RecordEvent) -> Any:
        original = e.original or {}
        upgraded = (
            e.collection.is_auth and not original.get("verified") and bool(e.record.get("verified"))
        )
        if upgraded and delete_links(e.conn, e.schema, hooks, e.collection, str(e.record["id"])):
            e.record["tokenKey"] = security.random_string(50)
        return e.next()

    hooks.on_record_delete.bind(on_delete, id="externalAuths.recordRef", priority=99)
    hooks.on_record_update.bind(on_update, id="externalAuths.verifiedUpgrade", priority=99)
