"""`POST /api/batch`: transactional record writes.

Contract (as PocketBase 0.40): refused with 403 unless `settings.batch.enabled`; the body
is `{"requests": [{method, url, body?, headers?}]}` (at most `batch.maxRequests`), each a record
create (`POST .../records`), upsert (`PUT .../records`), update (`PATCH .../records/ID`) or
delete (`DELETE .../records/ID`). All run in ONE write transaction with the caller's auth and
context `batch`: the answer is `[{"status", "body"}]`, or, when one fails, nothing is written
and the answer is 400 "Batch transaction failed." naming the failed request's index.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, json_response, read_body, request_info
from instance_runtime.apis.records import enrich
from instance_runtime.core import record_write, records
from instance_runtime.core.app_hooks import AppHooks
from instance_runtime.core.errors import ApiError, FieldError, bad_request
from instance_runtime.core.request_info import RequestInfo
from instance_runtime.core.schema import Schema

_RECORDS = re.compile(r"^/api/collections/(?P<collection>[^/?]+)/records(?:/(?P<id>[^/?]+))?$")


def _run_one(
    conn: sqlite3.Connection,
    schema: Schema,
    item: dict[str, Any],
    base: RequestInfo,
    hooks: AppHooks,
) -> dict[str, Any]:
    method = str(item.get("method") or "").upper()
    url = urlsplit(str(item.get("url") or ""))
    match = _RECORDS.match(url.path)
    if not match:
        raise ApiError(400, "Something went wrong while processing your request.")
    coll = schema.find(match.group("collection"))
    if coll is None:
        raise ApiError(404, "Missing collection context.")
    body = item.get("body") if isinstance(item.get("body"), dict) else {}
    assert isinstance(body, dict)
    info = RequestInfo(
        method=method,
        context="batch",
        query=dict(parse_qsl(url.query)),
        headers=base.headers,
        body=body,
        auth=base.auth,
        auth_collection=base.auth_collection,
    )
    rid = match.group("id")
    if method == "POST" and rid is None:
        record = record_write.create(conn, schema, coll, body, info, hooks=hooks)
    elif method == "PUT" and rid is None:
        given = str(body.get("id") or "")
        if given and records.find(conn, coll, given) is not None:
            record = record_write.update(conn, schema, coll, given, body, info, hooks=hooks)
        else:
            record = record_write.create(conn, schema, coll, body, info, hooks=hooks)
    elif method == "PATCH" and rid is not None:
        record = record_write.update(conn, schema, coll, rid, body, info, hooks=hooks)
    elif method == "DELETE" and rid is not None:
        record_write.delete(conn, schema, coll, rid, info, hooks=hooks)
        return {"status": 204, "body": None}
    else:
        raise ApiError(400, "Something went wrong while processing your request.")
    return {"status": 200, "body": enrich(conn, schema, coll, [record], info)[0]}


async def batch(request: Request) -> Response:
    app = get_app(request)
    config = app.settings.current["batch"]
    max_requests = int(config.get("maxRequests") or 0)
    if not config.get("enabled") or max_requests <= 0:
        raise ApiError(403, "Batch requests are not allowed.")
    limit = int(config.get("maxBodySize") or 0) or (128 << 20)
    body = await read_body(request, limit, message="Failed to read the submitted batch data.")
    info = await request_info(request, app, body)
    items = body.get("requests")
    if not isinstance(items, list) or not items:
        raise bad_request(
            "Invalid batch request data.",
            {"requests": FieldError("validation_required", "Cannot be blank.")},
        )
    if len(items) > max_requests:
        raise bad_request(
            "Invalid batch request data.",
            {
                "requests": FieldError(
                    "validation_length_too_long",
                    "The length must be no more than {{.max}}.",
                    {"max": max_requests, "min": 0},
                )
            },
        )

    def run(conn: sqlite3.Connection, schema: Schema) -> list[dict[str, Any]]:
        results = []
        for index, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise ApiError(400, "Invalid batch request data.")
                results.append(_run_one(conn, schema, item, info, app.hooks))
            except ApiError as exc:
                raise ApiError(
                    400,
                    "Batch transaction failed.",
                    {
                        "requests": {
                            str(index): {
                                "code": "batch_request_failed",
                                "message": "Batch request failed.",
                                "response": exc.to_json(),
                            }
                        }
                    },
                ) from exc
        return results

    return json_response(await app.write(run))


routes = [Route("/api/batch", batch, methods=["POST"])]
