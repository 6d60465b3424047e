"""OAuth2: `POST /api/collections/{collection}/auth-with-oauth2` and `GET`/`POST
/api/oauth2-redirect`, thin over `core.oauth2_login` and `core.oauth2_redirect`.

Contract, as PocketBase 0.40:

- `auth-with-oauth2`: an unknown collection 404 "Missing or invalid collection context.", the
  rate limit (`authWithOAuth2`, `auth`), one that is not an auth collection 404 "Missing or
  invalid auth collection context.", `oauth2.enabled` false 403 "The collection is not
  configured to allow OAuth2 authentication."; an unreadable body 400 "An error occurred while
  loading the submitted data."; then the login (`core.oauth2_login.authenticate`, with the
  request context `oauth2`; creating a record takes the collection's `create` rate limit as
  `POST .../records` would) answered by `record_auth.auth_response` with method `oauth2`:
  `{token, record, meta}`, `meta` the provider's user with `isNew`.
- `oauth2-redirect`: reads `state`, `code`, `error` from the query (GET) or from the body
  (POST: a `form_post` form, whose `user` is Apple's, or JSON) and answers a redirect (307 to a
  GET, 303 to a POST) to `../_/#/auth/oauth2-redirect-success` when the code reached the
  realtime client whose id is `state`, else to `../_/#/auth/oauth2-redirect-failure`.
- `bind(app)` installs the model hooks of `_externalAuths` (the server calls it once).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import (
    check_collection_rate_limit,
    client_ip,
    get_app,
    json_response,
    read_body,
    request_info,
)
from instance_runtime.apis.record_auth import auth_collection, auth_response
from instance_runtime.core import external_auths, oauth2_login, oauth2_redirect
from instance_runtime.core.app import App
from instance_runtime.core.errors import ApiError

FORM_ERROR = oauth2_login.FORM_ERROR
SUCCESS_PATH = "../_/#/auth/oauth2-redirect-success"
FAILURE_PATH = "../_/#/auth/oauth2-redirect-failure"
_FORMS = ("multipart/form-data", "application/x-www-form-urlencoded")


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _has_body(request: Request) -> bool:
    """Go's `ContentLength != 0` (an unknown length counts as a body)."""
    return request.headers.get("content-length", "").strip() != "0"


async def _bound_body(request: Request) -> dict[str, Any]:
    """The body as PocketBase's `BindBody` takes it: JSON or a form (a body of another type is
    400 "Unsupported Content-Type.", an unreadable one 400 `FORM_ERROR`)."""
    if not _has_body(request):
        return {}
    ctype = _content_type(request)
    if not ctype.startswith("application/json") and ctype not in _FORMS:
        raise ApiError(400, "Unsupported Content-Type.")  # PocketBase's ErrUnsupportedContentType
    return await read_body(request, message=FORM_ERROR)


async def auth_with_oauth2(request: Request) -> Response:
    app = get_app(request)
    coll = auth_collection(app, request, "authWithOAuth2", "auth")
    if not oauth2_login.oauth2_options(coll).get("enabled"):
        raise ApiError(403, "The collection is not configured to allow OAuth2 authentication.")
    body = await _bound_body(request)
    info = await request_info(request, app, body)
    info.context = "oauth2"
    form = oauth2_login.OAuth2Form.from_body(body)
    create_scope = {
        **request.scope,
        "method": "POST",
        "path": f"/api/collections/{coll.name}/records",
    }
    create_request = Request(create_scope)
    answer: dict[str, Any] = {}

    async def respond(login: oauth2_login.OAuth2Login) -> None:
        answer.update(
            await auth_response(
                app, coll, login.record, info, "oauth2", request=request, meta=login.meta()
            )
        )

    await oauth2_login.authenticate(
        app,
        coll,
        form,
        info,
        respond=respond,
        before_create=lambda: check_collection_rate_limit(create_request, app, coll, "create"),
    )
    return json_response(answer)


def _first(values: Any) -> Any:
    if isinstance(values, list):
        return values[0] if values else ""
    return values


async def _redirect_data(request: Request) -> oauth2_redirect.RedirectData | None:
    """What the provider sent; None when a POST body cannot be read (the failure page)."""
    if request.method != "POST":
        query = request.query_params

        def get(key: str) -> str:
            values = query.getlist(key)
            return values[0] if values else ""

        return oauth2_redirect.RedirectData(get("state"), get("code"), get("error"))
    try:
        body = await _bound_body(request)
    except ApiError:
        return None
    values: dict[str, str] = {}
    form = _content_type(request) in _FORMS
    keys = ("state", "code", "error", "user") if form else ("state", "code", "error")
    for key, raw in body.items():
        name = key if form else next((k for k in keys if k.casefold() == key.casefold()), "")
        if name not in keys or raw is None:
            continue
        value = _first(raw) if form else raw
        if not isinstance(value, str):
            return None
        values[name] = value
    return oauth2_redirect.RedirectData(
        values.get("state", ""),
        values.get("code", ""),
        values.get("error", ""),
        values.get("user", ""),
    )


async def oauth2_redirect_page(request: Request) -> Response:
    app = get_app(request)
    data = await _redirect_data(request)
    delivered = data is not None and oauth2_redirect.deliver_redirect(
        app, data, client_ip(request.scope, app.settings.current)
    )
    status = 307 if request.method == "GET" else 303
    return Response(
        status_code=status, headers={"location": SUCCESS_PATH if delivered else FAILURE_PATH}
    )


def bind(app: App) -> None:
    """Install the model hooks of `_externalAuths` (`core.external_auths.bind`)."""
    external_auths.bind(app.hooks)


routes = [
    Route("/api/collections/{collection}/auth-with-oauth2", auth_with_oauth2, methods=["POST"]),
    Route("/api/oauth2-redirect", oauth2_redirect_page, methods=["GET", "POST"]),
]
