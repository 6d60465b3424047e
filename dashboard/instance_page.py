"""One instance: URL, state, uptime, start/stop, version, open admin, files, deploys, env vars,
live logs, charts, backups, custom domains, scheduled jobs, SDK snippet, and delete with a typed
confirmation."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from control_plane.schemas import InstanceUpdate
from control_plane.services.errors import Invalid, ServiceError
from dashboard.charts import memory_chart, requests_chart
from dashboard.deploy_views import deploy_views
from dashboard.domain_views import domain_views
from dashboard.job_views import job_views
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

LOG_TAIL = 200
CHART_HOURS = (1, 6, 24)


def _hours(request: Request) -> int:
    raw = request.query_params.get("hours", "")
    return int(raw) if raw.isdigit() and int(raw) in CHART_HOURS else 6


async def show_instance(
    request: Request,
    name: str,
    *,
    errors: dict[str, str] | None = None,
    values: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    """The instance page; with `errors` (and the `values` typed) after a refused form."""
    viewer = await require_viewer(request)
    cp = cp_of(request)
    row = await cp.instances.get(viewer.account, name)
    hours = _hours(request)
    points = await cp.metrics.series(row, hours)
    engines = {engine.name: engine for engine in cp.engine_admin.list_engines()}
    engine = engines.get(row.engine)
    return render(
        request,
        "instance.html",
        status,
        instance=instance_view(cp.settings, row),
        env=cp.instances.env_public(row),
        versions=engine.versions if engine else [row.version],
        logs=await cp.instances.logs(viewer.account, name, LOG_TAIL),
        hours=hours,
        chart_hours=CHART_HOURS,
        requests_svg=requests_chart(points, hours),
        memory_svg=memory_chart(
            points, hours, gap=timedelta(seconds=2.5 * cp.settings.metrics_interval_s)
        ),
        snapshots=await cp.backups.snapshots(row.id),
        schedule=await cp.backups.schedule_public(row),
        replica=await cp.backups.state_of(row.id),
        deploys=await deploy_views(request, viewer.account, name),
        domains=await domain_views(request, viewer.account, name),
        jobs=await job_views(request, viewer.account, name),
        errors=errors or {},
        values=values or {},
    )


@router.get("/instances/{name}")
async def instance(request: Request, name: str) -> Response:
    return await show_instance(request, name)


@router.get("/instances/{name}/status")
async def status(request: Request, name: str) -> Response:
    """The status panel alone, for polling (fast while the instance is changing)."""
    viewer = await require_viewer(request)
    cp = cp_of(request)
    row = await cp.instances.get(viewer.account, name)
    return render(request, "_status.html", instance=instance_view(cp.settings, row))


@router.get("/instances/{name}/logs")
async def logs(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    lines = await cp_of(request).instances.logs(viewer.account, name, LOG_TAIL)
    return render(request, "_logs.html", logs=lines)


@router.post("/instances/{name}/start")
async def start(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).instances.start(viewer.account, name)
    return redirect(f"/instances/{name}", notice="started")


@router.post("/instances/{name}/stop")
async def stop(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).instances.stop(viewer.account, name)
    return redirect(f"/instances/{name}", notice="stopped")


@router.post("/instances/{name}/version")
async def change_version(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    try:
        update = InstanceUpdate(version=form.get("version") or None)
        await cp_of(request).instances.update(viewer.account, name, update)
    except ServiceError as exc:
        return await show_instance(request, name, errors=field_errors(exc, "version"), status=422)
    return redirect(f"/instances/{name}", notice="upgraded")


@router.post("/instances/{name}/admin")
async def open_admin(request: Request, name: str) -> Response:
    """Off to the instance's own host, where a single-use code signs the browser in."""
    viewer = await require_viewer(request)
    await checked_form(request)
    try:
        link = await cp_of(request).admin_access.admin_link(viewer.account, name)
    except ServiceError as exc:
        return await show_instance(
            request, name, errors=field_errors(exc, "admin"), status=exc.status
        )
    return RedirectResponse(link, status_code=303)


@router.post("/instances/{name}/env")
async def set_env(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    key = form.get("key", "").strip()
    try:
        await cp_of(request).instances.set_env_var(viewer.account, name, key, form.get("value", ""))
    except ServiceError as exc:
        errors = field_errors(exc, "key")
        return await show_instance(request, name, errors=errors, values={"key": key}, status=422)
    return redirect(f"/instances/{name}", notice="env_saved")


@router.post("/instances/{name}/env/{key}/delete")
async def unset_env(request: Request, name: str, key: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).instances.unset_env_var(viewer.account, name, key)
    return redirect(f"/instances/{name}", notice="env_removed")


@router.post("/instances/{name}/delete")
async def delete(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    if form.get("confirm", "").strip() != name:
        errors = field_errors(Invalid(f"type {name} to confirm"), "confirm")
        values = {"confirm": form.get("confirm", "")}
        return await show_instance(request, name, errors=errors, values=values, status=422)
    await cp_of(request).instances.delete(viewer.account, name, purge=False)
    return redirect("/instances", notice="deleted")
