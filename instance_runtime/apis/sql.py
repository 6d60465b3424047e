"""`POST /api/sql` (PocketBase 0.39+): the superusers' SQL console.

Body `{"query": "..."}` (JSON or a form). Superusers only (401 for a guest, 403 for any other
auth, as PocketBase's `RequireSuperuserAuth`); a body that is no object or a `query` that is no
string is PocketBase's loading 400, a blank or over-5000-characters query its validation 400
(`data.query`), a failing one `Failed to execute query. Raw error:\\n...` with empty `data`.
The answer is `core.sql_console.run_sql`'s `{execTime, affectedRows, columns, rows}`; what the
console may and may not do is said there.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, json_response, require_superuser
from instance_runtime.apis.collections_meta import query_form
from instance_runtime.core.errors import ApiError
from instance_runtime.core.sql_console import SqlConsoleError, run_sql


async def post_sql(request: Request) -> Response:
    await require_superuser(request)
    query = await query_form(request)
    try:
        result = await run_sql(get_app(request), query)
    except SqlConsoleError as exc:
        raise ApiError(400, f"Failed to execute query. Raw error:\n{exc}") from exc
    return json_response(result)


routes = [Route("/api/sql", post_sql, methods=["POST"])]
