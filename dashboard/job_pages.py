"""An instance's scheduled jobs on its page: add one, pause or resume it, delete it (over
`JobService`; the latest runs are shown by the page itself)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from control_plane.jobs.schemas import TIMEOUT_DEFAULT_S, JobCreate, JobUpdate
from control_plane.services.errors import ServiceError
from dashboard.instance_page import show_instance
from dashboard.web import (
    PageRoute,
    checked_form,
    cp_of,
    field_errors,
    redirect,
    require_viewer,
    validation_errors,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

# the form's fields (prefixed: the backup schedule's form on the same page has `schedule`)
FIELDS = ("schedule", "method", "path", "body", "timeout_s")
PREFIX = "job_"


def _prefixed(errors: dict[str, str]) -> dict[str, str]:
    return {PREFIX + (key if key in FIELDS else "schedule"): text for key, text in errors.items()}


@router.post("/instances/{name}/jobs")
async def add_job(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    typed = {key: form.get(PREFIX + key, "").strip() for key in FIELDS}
    values = {PREFIX + key: value for key, value in typed.items()}
    try:
        data = JobCreate.model_validate(
            {
                "schedule": typed["schedule"],
                "method": typed["method"] or "GET",
                "path": typed["path"],
                "body": form.get(PREFIX + "body") or None,
                "timeout_s": typed["timeout_s"] or TIMEOUT_DEFAULT_S,
            }
        )
        await cp_of(request).jobs.create(viewer.account, name, data)
    except ValidationError as exc:
        errors = _prefixed(validation_errors(list(exc.errors())))
        return await show_instance(request, name, errors=errors, values=values, status=422)
    except ServiceError as exc:
        errors = _prefixed(field_errors(exc, "schedule"))
        return await show_instance(request, name, errors=errors, values=values, status=exc.status)
    return redirect(f"/instances/{name}#jobs-h")


async def _set_paused(request: Request, name: str, job_id: str, paused: bool) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).jobs.update(viewer.account, name, job_id, JobUpdate(paused=paused))
    return redirect(f"/instances/{name}#jobs-h")


@router.post("/instances/{name}/jobs/{job_id}/pause")
async def pause_job(request: Request, name: str, job_id: str) -> Response:
    return await _set_paused(request, name, job_id, True)


@router.post("/instances/{name}/jobs/{job_id}/resume")
async def resume_job(request: Request, name: str, job_id: str) -> Response:
    return await _set_paused(request, name, job_id, False)


@router.post("/instances/{name}/jobs/{job_id}/delete")
async def delete_job(request: Request, name: str, job_id: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).jobs.delete(viewer.account, name, job_id)
    return redirect(f"/instances/{name}#jobs-h")
