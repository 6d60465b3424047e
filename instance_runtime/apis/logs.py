"""`/api/logs`: the app's request log, for superusers (PocketBase's `apis/logs.go`).

Contract (every route answers 401 without a valid token and 403 for a non-superuser first):

- `GET /api/logs`: a search result over the log (`page`, `perPage`, `sort`, `filter`,
  `skipTotal`, `fields`; see `core.log_query`); a bad filter, sort or paging is PocketBase's
  generic 400.
- `GET /api/logs/stats`: `[{date, total}]` per hour, with an optional `filter` (a bad one is
  400 "Invalid filter format.").
- `GET /api/logs/{id}`: one entry, or the 404 "The requested resource wasn't found.".
- `DELETE /api/logs`: deletes every entry (the retention setting stays), then 204.

A successful request to these routes is not itself logged (PocketBase's
`SkipSuccessActivityLog`; `apis.middlewares` skips it). Entries written less than a flush
interval ago (`core.logs`) are not listed yet, as in PocketBase.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, json_response, require_superuser
from instance_runtime.core.errors import bad_request, not_found
from instance_runtime.core.expand import pick_fields
from instance_runtime.core.log_query import find_log, list_logs, logs_stats
from instance_runtime.core.records import ListParams
from instance_runtime.tools.search import FilterError

PREFIX = "/api/logs"


def _fields(request: Request) -> str:
    return request.query_params.get("fields", "")


async def list_entries(request: Request) -> Response:
    await require_superuser(request)
    params = ListParams.parse(dict(request.query_params))
    params.check()

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        try:
            return list_logs(conn, params)
        except (FilterError, sqlite3.Error) as exc:
            raise bad_request() from exc

    result = await get_app(request).request_log.read(run)
    fields = _fields(request)
    if fields.strip():
        result["items"] = [pick_fields(item, fields) for item in result["items"]]
    return json_response(result)


async def stats(request: Request) -> Response:
    await require_superuser(request)
    expr = request.query_params.get("filter", "")

    def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
        try:
            return logs_stats(conn, expr)
        except FilterError as exc:
            raise bad_request("Invalid filter format.") from exc
        except sqlite3.Error as exc:
            raise bad_request("Failed to generate logs stats.") from exc

    found = await get_app(request).request_log.read(run)
    return json_response(pick_fields(found, _fields(request)))


async def view_entry(request: Request) -> Response:
    await require_superuser(request)
    log_id = request.path_params["id"]
    found = await get_app(request).request_log.read(lambda conn: find_log(conn, log_id))
    if found is None:
        raise not_found()
    return json_response(pick_fields(found, _fields(request)))


async def delete_all(request: Request) -> Response:
    await require_superuser(request)
    await get_app(request).request_log.truncate()
    return Response(status_code=204)


routes = [
    Route(PREFIX, list_entries, methods=["GET"]),
    Route(PREFIX, delete_all, methods=["DELETE"]),
    Route(f"{PREFIX}/stats", stats, methods=["GET"]),
    Route(PREFIX + "/{id}", view_entry, methods=["GET"]),
]
