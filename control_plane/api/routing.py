"""The routers of the API: what every one of them shares.

`api_router` gives each module of `control_plane.api` its router: request bodies decoded as
strict JSON (`json_body.StrictJSONRoute`), and the refusals its routes may answer documented in
the OpenAPI document with their one body (`errors.ErrorPublic`). Every route may also answer
what the apex's middlewares refuse before it runs (`TRANSPORT_REFUSALS`: a request without
`Host`, a bad or too large body, a stalled one, a `Host` that is not the apex's) and 422 for
input it does not accept. A route adds what only it gives with `responses=error_responses(...)`.
"""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.api.errors import error_responses
from control_plane.api.json_body import StrictJSONRoute

TRANSPORT_REFUSALS = (400, 408, 413, 421)


def api_router(tag: str, *refusals: int) -> APIRouter:
    """The router of the endpoint group `tag`, whose routes may refuse with `refusals` (on
    top of `TRANSPORT_REFUSALS` and 422)."""
    statuses = sorted({*TRANSPORT_REFUSALS, 422, *refusals})
    return APIRouter(tags=[tag], route_class=StrictJSONRoute, responses=error_responses(*statuses))
