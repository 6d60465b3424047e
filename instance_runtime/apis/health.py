"""`GET|HEAD /api/health`: answers as PocketBase 0.40 does (`apis/health.go`).

Contract: `{"message": "API is healthy.", "code": 200, "data": {}}` for everyone; for a
superuser (by the request's Authorization) `data` is `{canBackup, realIP,
possibleProxyHeader}`: `canBackup` is false while a backup or restore runs
(`core.backups`), `realIP` the client's address behind `settings.trustedProxy`, and
`possibleProxyHeader` the first of the trusted proxy headers, then `CF-Connecting-IP`,
`Fly-Client-IP` and `X-Forwarded-For`, that the request carries with a non-empty value (as
written in that list), else "" (the dashboard's hint that the app is behind a proxy).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import client_ip, get_app, json_response, request_auth
from instance_runtime.core.backups import backups_of
from instance_runtime.core.request_info import SUPERUSERS

COMMON_PROXY_HEADERS = ("CF-Connecting-IP", "Fly-Client-IP", "X-Forwarded-For")


def possible_proxy_header(request: Request, settings: dict[str, Any]) -> str:
    """See the module docstring."""
    trusted = list((settings.get("trustedProxy") or {}).get("headers") or [])
    for name in (*trusted, *COMMON_PROXY_HEADERS):
        if name and request.headers.get(str(name), ""):
            return str(name)
    return ""


async def health(request: Request) -> Response:
    app = get_app(request)
    data: dict[str, Any] = {}
    found = await request_auth(request, app)
    if found is not None and found[0].name == SUPERUSERS:
        settings = app.settings.current
        data = {
            "canBackup": not backups_of(app).busy,
            "realIP": client_ip(request.scope, settings),
            "possibleProxyHeader": possible_proxy_header(request, settings),
        }
    return json_response({"message": "API is healthy.", "code": 200, "data": data})


routes = [Route("/api/health", health, methods=["GET", "HEAD"])]
