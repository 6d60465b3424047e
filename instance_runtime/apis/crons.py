"""`/api/crons`: list the app's cron jobs and run one now (superusers only).

Contract (as PocketBase 0.40, `apis/cron.go`): a guest is 401, an auth record that is not a
superuser 403. `GET /api/crons` answers `[{id, expression}]` for every job of `app.cron`: the
jobs whose id does not start with `__pb` first, by id, then the system (`__pb...`) jobs in
registration order (what PocketBase's stable sort makes of its comparator).
`POST /api/crons/{id}` starts the job in the background and answers 204 at once; an unknown id
is 404 "Missing or invalid cron job.".
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from instance_runtime.apis.base import get_app, json_response, require_superuser
from instance_runtime.core.errors import ApiError
from instance_runtime.tools.cron import Job

SYSTEM_PREFIX = "__pb"


def _order(job: Job) -> tuple[int, str]:
    return (1, "") if job.id.startswith(SYSTEM_PREFIX) else (0, job.id)


async def list_crons(request: Request) -> Response:
    await require_superuser(request)
    jobs = sorted(get_app(request).cron.jobs(), key=_order)
    return json_response([{"id": job.id, "expression": job.expression} for job in jobs])


async def run_cron(request: Request) -> Response:
    await require_superuser(request)
    if not get_app(request).cron.run(request.path_params["id"]):
        raise ApiError(404, "Missing or invalid cron job.")
    return Response(status_code=204)


routes = [
    Route("/api/crons", list_crons, methods=["GET"]),
    Route("/api/crons/{id}", run_cron, methods=["POST"]),
]
