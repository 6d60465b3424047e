"""Shared HTTP plumbing: JSON responses, body parsing with limits, auth, request info.

Contract:

- `json_response(data, status)` serializes with orjson (PocketBase's key order is the dicts').
- `read_body(request, limit)` returns the submitted object from JSON, multipart/form-data
  (`@jsonPayload` merged, repeated keys as lists) or urlencoded bodies; a body over `limit`
  bytes is a 413, malformed JSON a 400 (PocketBase's messages). The file parts of a multipart
  body (spooled to temporary files by starlette's parser past 1 MiB) are kept aside:
  `uploaded_files(request)` returns them by form key, still open until the response is sent.
- `authenticate(header, app)` verifies an `Authorization` header (the raw token as the SDK
  sends it, or `Bearer TOKEN`): (collection, record), or None for a guest (an invalid token is
  a guest, as PocketBase has it). The `AuthLoader` middleware does it once per request and
  keeps the result in the scope; `request_info(request, app, body)` builds the `RequestInfo`
  from it, and `require_superuser` refuses a guest (401) and any other auth (403).
- `client_ip(scope, settings)` is the client's address behind `settings.trustedProxy`;
  `check_collection_rate_limit(request, app, coll, *tags)` applies PocketBase's per-collection
  rate limits (labels `COLLECTION:tag`, `*:tag`, then the request's) and raises the 429.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from instance_runtime.core import auth
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError, forbidden, unauthorized
from instance_runtime.core.models import Collection
from instance_runtime.core.records import Record
from instance_runtime.core.request_info import SUPERUSERS, RequestInfo
from instance_runtime.tools.client_ip import ip_in_list, real_ip
from instance_runtime.tools.rate_limit import Rule, find_rule

AUTH_SCOPE_KEY = "pocketfleet.auth"
UPLOADS_SCOPE_KEY = "pocketfleet.uploads"

DEFAULT_MAX_BODY = 32 << 20
_TOKEN_CACHE_TTL = 30.0
_TOKEN_CACHE_MAX = 1024
_VERIFY = "verify_token"  # a short read: run inline (`core.db`)


_JSON_TYPE = (b"content-type", b"application/json")


class JSONResponse(Response):
    """orjson's JSON; without `headers`, `media_type` or `background`, its headers are built
    here directly (the same two that starlette's `init_headers` builds, in its order)."""

    media_type = "application/json"

    def __init__(
        self,
        content: Any = None,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
        media_type: str | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        if headers is not None or media_type is not None or background is not None:
            super().__init__(content, status_code, headers, media_type, background)
            return
        self.status_code = status_code
        self.background = None
        self.body = body = orjson.dumps(content)
        if status_code < 200 or status_code in (204, 304):
            self.raw_headers = [_JSON_TYPE]
        else:
            self.raw_headers = [(b"content-length", b"%d" % len(body)), _JSON_TYPE]

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
        uploads: dict[str, list[UploadFile]] = {}
        request.scope[UPLOADS_SCOPE_KEY] = uploads
        for key in form:
            parts = form.getlist(key)
            files = [v for v in parts if isinstance(v, UploadFile) and (v.filename or v.size)]
            if files:
                uploads[key] = files
            values = [v for v in parts if isinstance(v, str)]
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


def uploaded_files(request: Request) -> dict[str, list[UploadFile]]:
    """The file parts of the multipart body `read_body` parsed, by form key."""
    found: dict[str, list[UploadFile]] = request.scope.get(UPLOADS_SCOPE_KEY) or {}
    return found


def _token(header: str) -> str:
    header = header.strip()
    if header[:7].lower() == "bearer ":
        header = header[7:].strip()
    return header


# token -> (expires_at, auth_generation, collection, record)
_cache: dict[str, tuple[float, int, Collection, Record]] = {}
Auth = tuple[Collection, Record]


async def authenticate(header: str, app: App) -> Auth | None:
    """See the module docstring."""
    token = _token(header)
    if not token:
        return None
    now = time.monotonic()
    hit = _cache.get(token)
    if hit is not None and hit[0] > now and hit[1] == app.auth_generation:
        return hit[2], hit[3]
    found = await app.read(
        lambda conn, schema: auth.verify_token(conn, schema, token), inline_key=_VERIFY
    )
    if found is None:
        return None
    if len(_cache) >= _TOKEN_CACHE_MAX:
        _cache.clear()
    _cache[token] = (now + _TOKEN_CACHE_TTL, app.auth_generation, found[0], found[1])
    return found


async def request_auth(request: Request, app: App) -> Auth | None:
    """The request's auth as the `AuthLoader` middleware found it."""
    scope = request.scope
    if AUTH_SCOPE_KEY not in scope:  # an app mounted without the middleware
        scope[AUTH_SCOPE_KEY] = await authenticate(request.headers.get("authorization", ""), app)
    found: Auth | None = scope[AUTH_SCOPE_KEY]
    return found


def remote_ip(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def client_ip(scope: Scope, settings: dict[str, Any]) -> str:
    """See the module docstring."""
    proxy = settings.get("trustedProxy") or {}
    names = proxy.get("headers") or []
    remote = remote_ip(scope)
    if not names:
        return remote
    raw = scope.get("headers") or []

    def values(name: str) -> list[str]:
        wanted = name.lower().encode("latin-1")
        return [v.decode("latin-1") for k, v in raw if k == wanted]

    return real_ip(remote, values, names, bool(proxy.get("useLeftmostIP")))


def rate_limit(app: App, scope: Scope, limiter_id: str, rule: Rule) -> None:
    """Take one request of `rule` for this client (raises the 429)."""
    audience = str(rule.get("audience", ""))
    authenticated = scope.get(AUTH_SCOPE_KEY) is not None
    if (audience == "@guest" and authenticated) or (audience == "@auth" and not authenticated):
        return
    key = client_ip(scope, app.settings.current)
    if key and not app.rate_limiters.allow(limiter_id, rule, key):
        raise ApiError(429, "Too Many Requests.")


def skip_rate_limit(app: App, scope: Scope) -> bool:
    """PocketBase skips rate limits when off, for superusers and for `excludedIPs`."""
    settings = app.settings.current
    limits = settings["rateLimits"]
    if not limits.get("enabled"):
        return True
    found = scope.get(AUTH_SCOPE_KEY)
    if found is not None and found[0].name == SUPERUSERS:
        return True
    return ip_in_list(limits.get("excludedIPs") or [], client_ip(scope, settings))


def check_collection_rate_limit(request: Request, app: App, coll: Collection, *tags: str) -> None:
    """See the module docstring."""
    scope = request.scope
    if skip_rate_limit(app, scope):
        return
    path = str(scope["path"])
    labels = [f"{coll.name}:{tag}" for tag in tags] + [f"*:{tag}" for tag in tags]
    labels += [f"{scope['method']} {path}", path]
    rule = find_rule(
        app.settings.current["rateLimits"].get("rules") or [], labels, audiences(scope)
    )
    if rule is not None:
        rate_limit(app, scope, coll.id + "".join(tags) + str(rule.get("audience", "")), rule)


def audiences(scope: Scope) -> tuple[str, str]:
    """The rule audiences that apply to this request's client."""
    return ("", "@auth") if scope.get(AUTH_SCOPE_KEY) is not None else ("", "@guest")


def _headers(request: Request) -> dict[str, str]:
    """The request's headers by `@request.headers.*` name (the last of a repeated one)."""
    return {
        k.decode("latin-1").lower().replace("-", "_"): v.decode("latin-1")
        for k, v in request.scope["headers"]
    }


async def request_info(
    request: Request, app: App, body: dict[str, Any] | None = None
) -> RequestInfo:
    found = await request_auth(request, app)
    info = RequestInfo(
        method=request.method.upper(),
        query=dict(request.query_params) if request.scope.get("query_string") else {},
        headers=_headers(request),
        body=body or {},
    )
    if found is not None:
        coll, record = found
        info.auth = {**record, "collectionId": coll.id, "collectionName": coll.name}
        info.auth_collection = coll
    return info


async def require_superuser(request: Request, body: dict[str, Any] | None = None) -> RequestInfo:
    """See the module docstring."""
    info = await request_info(request, get_app(request), body)
    if info.auth is None:
        raise unauthorized()
    if not info.is_superuser:
        raise forbidden("The authorized record is not allowed to perform this action.")
    return info


def get_app(request: Request) -> App:
    app: App = request.app.state.runtime
    return app
