"""`/api/collections/meta/*`: the collection scaffolds, the OAuth2 providers and a dry run of a
view query (superusers only, as PocketBase's `RequireSuperuserAuth`: 401 for a guest, 403 for
any other auth).

- `GET /api/collections/meta/scaffolds`: `core.scaffolds.scaffolds()`.
- `GET /api/collections/meta/oauth2-providers`: `core.scaffolds.oauth2_providers()`.
- `POST /api/collections/meta/dry-run-view` with `{"query": "SELECT ..."}` (JSON or a form):
  `{"fields", "sample"}` (`core.view_dry_run`); a body that is no object or a `query` that is no
  string is PocketBase's loading 400, a blank or too long one its validation 400 (`data.query`),
  a query that cannot make a view `Invalid view query. Raw error: ...` with empty `data`.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, json_response, read_body, require_superuser
from instance_runtime.core.errors import ApiError
from instance_runtime.core.scaffolds import oauth2_providers, scaffolds
from instance_runtime.core.sql_console import validate_query
from instance_runtime.core.view_dry_run import ViewQueryError, dry_run_view

LOADING_ERROR = "An error occurred while loading the submitted data."
SAMPLE_SIZE = 10


async def query_form(request: Request) -> str:
    """The `query` of a `{query}` form (PocketBase's view and SQL forms), validated."""
    body = await read_body(request, message=LOADING_ERROR)
    value = body.get("query")
    if value is not None and not isinstance(value, str):
        raise ApiError(400, LOADING_ERROR)
    return validate_query(value)


async def get_scaffolds(request: Request) -> Response:
    await require_superuser(request)
    return json_response(scaffolds())


async def list_oauth2_providers(request: Request) -> Response:
    await require_superuser(request)
    return json_response(oauth2_providers())


async def post_dry_run_view(request: Request) -> Response:
    await require_superuser(request)
    query = await query_form(request)

    app = get_app(request)
    schema = app.schema

    def run(conn: sqlite3.Connection) -> dict[str, Any]:
        return dry_run_view(conn, schema, query, SAMPLE_SIZE)

    try:
        # on the writer, which alone may create the (rolled back) probe view; nothing is
        # written, so not through the app's writes (no auth cache to drop)
        result = await app.db.write(run)
    except ViewQueryError as exc:
        raise ApiError(400, f"Invalid view query. Raw error: \n{exc}") from exc
    return json_response(result)


routes = [
    Route("/api/collections/meta/scaffolds", get_scaffolds, methods=["GET"]),
    Route("/api/collections/meta/oauth2-providers", list_oauth2_providers, methods=["GET"]),
    Route("/api/collections/meta/dry-run-view", post_dry_run_view, methods=["POST"]),
]
