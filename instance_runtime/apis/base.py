"""Shared HTTP plumbing: JSON responses, body parsing with limits, auth, request info.

Contract:

- `json_response(data, status)` serializes with orjson (PocketBase's key order is the dicts').
- `read_body(request, limit)` returns the submitted object from JSON, multipart/form-data
  (`@jsonPayload` merged, repeated keys as lists) or urlencoded bodies; a body over `limit`
  bytes is a 413, malformed JSON a 400 (PocketBase's messages).
- `request_info(request, app, body)` authenticates the `Authorization` header (the raw token
  as the SDK sends it, or `Bearer TOKEN`) and builds the `RequestInfo`; an invalid token is
  treated as a guest, as PocketBase does.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from instance_runtime.core import auth
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError
from instance_runtime.core.models import Collection
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import RequestInfo

DEFAULT_MAX_BODY = 32 << 20
_TOKEN_CACHE_TTL = 30.0
_TOKEN_CACHE_MAX = 1024


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def json_response(data: Any, status: int = 200) -> Response:
    return JSONResponse(data, status_code=status)


def error_response(exc: ApiError) -> Response:
    return JSONResponse(exc.to_json(), status_code=exc.status)


def too_large() -> ApiError:
    return ApiError(413, "Request entity too large")


_MAX_DRAIN = 256 << 20


async def _refuse_too_large(request: Request, already: int = 0) -> ApiError:
    """The 413, after reading (and dropping) the rest of a not-too-huge body, so that the
    client, still sending, gets the answer instead of a broken pipe (as PocketBase does)."""
    total = already
    async for chunk in request.stream():
        total += len(chunk)
        if total > _MAX_DRAIN:
            break
    return too_large()


async def read_raw(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise await _refuse_too_large(request)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise await _refuse_too_large(request, total)
        chunks.append(chunk)
    return b"".join(chunks)


_GENERIC = "Something went wrong while processing your request."


async def read_body(
    request: Request, limit: int = DEFAULT_MAX_BODY, message: str = _GENERIC
) -> dict[str, Any]:
    """See the module docstring; `message` is the 400's message for an unreadable body."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise await _refuse_too_large(request)
        try:
            form = await request.form(max_part_size=limit)
        except Exception as exc:  # malformed multipart
            raise ApiError(400, message) from exc
        data: dict[str, Any] = {}
        for key in form:
            values = [v for v in form.getlist(key) if isinstance(v, str)]
            if not values:
                continue
            if key == "@jsonPayload":
                for text in values:
                    try:
                        payload = orjson.loads(text)
                    except orjson.JSONDecodeError as exc:
                        raise ApiError(400, message) from exc
                    if isinstance(payload, dict):
                        data.update(payload)
                continue
            data[key] = values[0] if len(values) == 1 else values
        return data
    raw = await read_raw(request, limit)
    if not raw.strip():
        return {}
    if ctype and ctype != "application/json" and not ctype.endswith("+json"):
        raise ApiError(400, "Unsupported Content-Type.")
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, message) from exc
    if not isinstance(parsed, dict):
        raise ApiError(400, message)
    return parsed


def _token(request: Request) -> str:
    header = request.headers.get("authorization", "").strip()
    if header[:7].lower() == "bearer ":
        header = header[7:].strip()
    return header


# token -> (expires_at, auth_generation, collection, record)
_cache: dict[str, tuple[float, int, Collection, Record]] = {}


async def authenticate(request: Request, app: App) -> tuple[Collection, Record] | None:
    token = _token(request)
    if not token:
        return None
    now = time.monotonic()
    hit = _cache.get(token)
    if hit is not None and hit[0] > now and hit[1] == app.auth_generation:
        return hit[2], hit[3]
    found = await app.read(lambda conn, schema: auth.verify_token(conn, schema, token))
    if found is None:
        return None
    if len(_cache) >= _TOKEN_CACHE_MAX:
        _cache.clear()
    _cache[token] = (now + _TOKEN_CACHE_TTL, app.auth_generation, found[0], found[1])
    return found


def _headers(request: Request) -> dict[str, str]:
    return {k.lower().replace("-", "_"): v for k, v in request.headers.items()}


async def request_info(
    request: Request, app: App, body: dict[str, Any] | None = None
) -> RequestInfo:
    found = await authenticate(request, app)
    info = RequestInfo(
        method=request.method.upper(),
        query=dict(request.query_params),
        headers=_headers(request),
        body=body or {},
    )
    if found is not None:
        coll, record = found
        info.auth = {**record, "collectionId": coll.id, "collectionName": coll.name}
        info.auth_collection = coll
    return info


def get_app(request: Request) -> App:
    app: App = request.app.state.runtime
    return app
