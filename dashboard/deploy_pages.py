"""An instance's deploys on the dashboard (over `DeployService`; the history itself is a
section of the instance page, `dashboard.deploy_views`):

- `GET /instances/{name}/deploys/{id}`: one deploy: its facts, message, the instance's log
  from it on, its manifest, and "Roll back to this" when its content is kept;
- `POST /instances/{name}/deploys/{id}/rollback`: deploy that content again (a new deploy,
  `rollback_of` set), then back to the instance page's deploys. A refusal (another deploy
  running: 409; content no longer kept: 409; the engine refusing it: 422) is shown in the
  deploys section of the instance page with its status; an unknown deploy, or another
  account's instance, is the 404 page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from control_plane.services.errors import NotFound, ServiceError
from dashboard.deploy_views import one_deploy
from dashboard.instance_page import show_instance
from dashboard.views import instance_view
from dashboard.web import PageRoute, checked_form, cp_of, redirect, render, require_viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.get("/instances/{name}/deploys/{deploy_id}")
async def deploy_page(request: Request, name: str, deploy_id: str) -> Response:
    viewer = await require_viewer(request)
    cp = cp_of(request)
    row = await cp.instances.get(viewer.account, name)  # 404 for another account's
    deploy = await one_deploy(request, viewer.account, name, deploy_id)
    return render(request, "deploy.html", instance=instance_view(cp.settings, row), deploy=deploy)


@router.post("/instances/{name}/deploys/{deploy_id}/rollback")
async def roll_back(request: Request, name: str, deploy_id: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    try:
        await cp_of(request).deploys.rollback(viewer.account, name, deploy_id)
    except NotFound:
        raise  # no such deploy, or not this account's instance: the 404 page
    except ServiceError as exc:
        errors = {"deploys": exc.message[:1].upper() + exc.message[1:]}
        return await show_instance(request, name, errors=errors, status=exc.status)
    return redirect(f"/instances/{name}#deploys-h")
