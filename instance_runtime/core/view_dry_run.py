"""Trying a view query without saving a collection (PocketBase's `DryRunView`, behind
`POST /api/collections/meta/dry-run-view`).

Contract: `dry_run_view(conn, schema, query, sample_size)` runs inside the caller's write
transaction (`core.views.dry_run`: the query's fields and sample, nothing left behind) and
returns `{"fields": [...], "sample": [...]}`: the fields a view collection with this query would
get, and up to `sample_size` of its records as PocketBase's JSON of a record of a temporary view
collection `temp_view_XXXXX` (random; hidden fields left out, as a record serialised without
request context is). It raises `ViewQueryError` with PocketBase's raw error text (without the
`Invalid query - ` of a collection's `viewQuery` error) when the query has several statements,
is refused by PocketBase's parser, has a `*` column, no `id` column or a field name PocketBase
refuses, fails in SQLite, and when the sample has a record with an empty or a repeated id.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from instance_runtime.core.records import serialize
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema
from instance_runtime.core.views import ViewQueryError, dry_run

__all__ = ["ViewQueryError", "dry_run_view"]


def dry_run_view(
    conn: sqlite3.Connection, schema: Schema, query: str, sample_size: int = 10
) -> dict[str, Any]:
    """See the module docstring."""
    temp, records = dry_run(conn, schema, query, sample_size)
    guest = RequestInfo()
    return {
        "fields": [f.to_json() for f in temp.fields],
        "sample": [serialize(temp, record, guest) for record in records],
    }
