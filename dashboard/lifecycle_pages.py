"""An instance's hibernation and backups controls (over `HibernationService` and
`BackupService`): hibernate/wake, back up now, download, restore, schedule."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from control_plane.services.errors import ServiceError
from dashboard.instance_page import show_instance
from dashboard.views import instance_view
from dashboard.web import (
    PageRoute,
    checked_form,
    cp_of,
    field_errors,
    redirect,
    render,
    require_viewer,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _back(name: str, notice: str, anchor: str = "") -> Response:
    return redirect(f"/instances/{name}", notice=notice + (f"#{anchor}" if anchor else ""))


@router.post("/instances/{name}/hibernate")
async def hibernate(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).hibernation.hibernate(viewer.account, name)
    return _back(name, "hibernated")


@router.post("/instances/{name}/wake")
async def wake(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).hibernation.wake(viewer.account, name)
    return _back(name, "woken")


@router.get("/instances/{name}/backups")
async def backups(request: Request, name: str) -> Response:
    """The backups panel alone (for polling while a backup or restore runs)."""
    viewer = await require_viewer(request)
    cp = cp_of(request)
    instance = await cp.instances.get(viewer.account, name)
    return render(
        request,
        "_backups.html",
        instance=instance_view(cp.settings, instance),
        snapshots=await cp.backups.snapshots(instance.id),
        schedule=await cp.backups.schedule_public(instance),
        replica=await cp.backups.state_of(instance.id),
        errors={},
        values={},
    )


@router.post("/instances/{name}/backups")
async def back_up_now(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).backups.create(viewer.account, name)
    return _back(name, "backed_up", "backups-h")


@router.get("/instances/{name}/backups/{backup_id}/download")
async def download(request: Request, name: str, backup_id: str) -> Response:
    viewer = await require_viewer(request)
    filename, size, content = await cp_of(request).backups.download(viewer.account, name, backup_id)
    return StreamingResponse(
        content,
        media_type="application/gzip",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(size),
        },
    )


@router.post("/instances/{name}/backups/{backup_id}/restore")
async def restore(request: Request, name: str, backup_id: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).backups.restorer.from_snapshot(viewer.account, name, backup_id)
    return _back(name, "restoring", "backups-h")


@router.post("/instances/{name}/backups/schedule")
async def schedule(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    cp = cp_of(request)
    text = form.get("schedule", "").strip() or None
    try:
        await cp.backups.set_schedule(viewer.account, name, text)
    except ServiceError as exc:
        errors = field_errors(exc, "schedule")
        values = {"schedule": text or ""}
        return await show_instance(request, name, errors=errors, values=values, status=422)
    return _back(name, "schedule_saved", "backups-h")
