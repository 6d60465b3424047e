"""Deploys of an instance's code folders (issue 14; `control_plane.deploys`).

- `POST /api/instances/{name}/deploys[?keep=true]` with one `application/gzip` body: a tar.gz
  of `pb_hooks/`, `pb_migrations/`, `pb_public/` (each optional). 201 with the deploy once
  the instance answers on it (or, stopped or hibernated, once the folders are switched:
  `started` false). The body may be as large as `PF_DEPLOY_MAX_MB` (the apex's
  `PF_MAX_BODY_BYTES` does not apply) and is streamed to a private file, never held whole.
  Refusals: 422 naming the member at fault (outside the three folders, absolute, `..`, a link,
  a device), 413 (a file over `PF_FILES_MAX_FILE_MB`, the archive over `PF_DEPLOY_MAX_MB`),
  507 (the disk quota, `PF_FILES_MAX_FILES`), 409 (another deploy or operation running), and
  422 `deploy_failed` with the engine's own message when the instance would not start on it:
  the previous folders serve again.
- `POST /api/instances/{name}/deploys/plan {files: {path: sha256}, folders?, keep?}`: which
  contents the instance lacks (`missing`) and what a deploy of those files would add, change
  and remove. The archive then holds `pocketfleet-manifest.json` (the same `files` and
  `folders`) and only the missing contents; 409 `stale_plan` if live files changed meanwhile.
- `GET /api/instances/{name}/deploys`: newest first; `GET .../deploys/{id}`: one, with its log;
- `POST /api/instances/{name}/deploys/{id}/rollback`: deploy that deploy's kept content again
  (`POST .../deploys/previous/rollback`: the good deploy before the newest good one).
"""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Query, Request, status
from starlette.requests import ClientDisconnect

from control_plane.api.body_limit import BodyLimitOverride
from control_plane.api.deps import CP, DeployAccount
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.deploys.manifest import MANIFEST_MAX_BYTES, DeployManifest
from control_plane.deploys.schemas import DeployPlanCreate, DeployPlanPublic, DeployPublic
from control_plane.limits import MB
from control_plane.services.errors import BadRequest
from control_plane.settings import Settings

router = api_router("deploys", 401, 403, 404)

UPLOAD_PATH = re.compile(r"^/api/instances/[^/]+/deploys/?$")
PLAN_PATH = re.compile(r"^/api/instances/[^/]+/deploys/plan/?$")
PREVIOUS = "previous"


def body_limits(settings: Settings) -> list[BodyLimitOverride]:
    """The body limits of deploy uploads and of plans (a manifest of up to
    `PF_FILES_MAX_FILES` paths), for the apex's `BodyLimitMiddleware`."""
    return [
        BodyLimitOverride("POST", UPLOAD_PATH, settings.deploy_max_mb * MB),
        BodyLimitOverride("POST", PLAN_PATH, MANIFEST_MAX_BYTES),
    ]


@router.post(
    "/api/instances/{name}/deploys",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409, 413, 507),
    openapi_extra={
        "requestBody": {
            "description": "a tar.gz of pb_hooks/, pb_migrations/, pb_public/",
            "content": {
                "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def create_deploy(
    cp: CP,
    account: DeployAccount,
    name: str,
    request: Request,
    keep: Annotated[bool, Query(description="keep the files the archive lacks")] = False,
) -> DeployPublic:
    """Make the instance's code folders what the archive holds, in one switch (see module)."""
    await cp.instances.get(account, name)  # 404 before reading a body for someone else's
    try:
        archive = await cp.deploys.receive(request.stream())
    except ClientDisconnect:
        raise BadRequest("the upload was cut off before its end") from None
    return DeployPublic.of(await cp.deploys.deploy(account, name, archive, keep=keep))


@router.post("/api/instances/{name}/deploys/plan")
async def plan_deploy(
    cp: CP, account: DeployAccount, name: str, data: DeployPlanCreate
) -> DeployPlanPublic:
    """What a deploy of these files needs sent, and what it would change (nothing changes)."""
    wanted = DeployManifest(files=data.files, folders=data.folders)
    return DeployPlanPublic.of(await cp.deploys.plan(account, name, wanted, keep=data.keep))


@router.get("/api/instances/{name}/deploys")
async def list_deploys(cp: CP, account: DeployAccount, name: str) -> list[DeployPublic]:
    """The instance's deploys, newest first."""
    return [DeployPublic.of(row) for row in await cp.deploys.history(account, name)]


@router.get("/api/instances/{name}/deploys/{deploy_id}")
async def get_deploy(cp: CP, account: DeployAccount, name: str, deploy_id: str) -> DeployPublic:
    return DeployPublic.of(await cp.deploys.get(account, name, deploy_id))


@router.post(
    "/api/instances/{name}/deploys/{deploy_id}/rollback",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409),
)
async def roll_back(cp: CP, account: DeployAccount, name: str, deploy_id: str) -> DeployPublic:
    """Deploy `deploy_id`'s content again, as a new deploy (`previous`: the good deploy
    before the newest good one)."""
    target = None if deploy_id == PREVIOUS else deploy_id
    return DeployPublic.of(await cp.deploys.rollback(account, name, target))
