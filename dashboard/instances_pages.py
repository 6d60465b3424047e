"""The instances list (live status) and the create form (name checked as it is typed, engine
and version pickers)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from control_plane.schemas import EnginePublic, InstanceCreate
from control_plane.services.errors import ServiceError
from dashboard.views import instance_view
from dashboard.web import (
    PageRoute,
    checked_form,
    cp_of,
    field_errors,
    redirect,
    render,
    require_viewer,
    validation_errors,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)


def _engine(engines: list[EnginePublic], name: str) -> EnginePublic | None:
    return next((engine for engine in engines if engine.name == name), None)


async def _page(
    request: Request,
    *,
    values: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    viewer = await require_viewer(request)
    cp = cp_of(request)
    rows = await cp.instances.list_owned(viewer.account)
    engines = cp.engine_admin.list_engines()
    values = values or {}
    chosen = _engine(engines, values.get("engine") or cp.settings.default_engine)
    return render(
        request,
        "instances.html",
        status,
        instances=[instance_view(cp.settings, row) for row in rows],
        engines=engines,
        chosen=chosen,
        values=values,
        errors=errors or {},
        quota=cp.instances.quota_of(viewer.account),
        domain_suffix=cp.settings.instance_url("NAME").split("NAME", 1)[1],
        scheme=cp.settings.public_scheme,
    )


@router.get("/instances")
async def instances(request: Request) -> Response:
    return await _page(request)


@router.get("/instances/-/rows")
async def instance_rows(request: Request) -> Response:
    """The table body alone, for polling."""
    viewer = await require_viewer(request)
    cp = cp_of(request)
    rows = await cp.instances.list_owned(viewer.account)
    views = [instance_view(cp.settings, row) for row in rows]
    return render(request, "_instance_rows.html", instances=views)


@router.get("/instances/-/check-name")
async def check_name(request: Request) -> Response:
    """Whether the name typed so far can be used (a fragment for the create form)."""
    await require_viewer(request)
    cp = cp_of(request)
    name = request.query_params.get("name", "").strip()
    problem = await cp.instances.name_unavailable(name) if name else None
    return render(
        request,
        "_name_check.html",
        name=name,
        problem=problem,
        url=cp.settings.instance_url(name) if name and not problem else "",
    )


@router.get("/instances/-/versions")
async def versions(request: Request) -> Response:
    """The version options of the chosen engine (a fragment for the create form)."""
    await require_viewer(request)
    chosen = _engine(
        cp_of(request).engine_admin.list_engines(), request.query_params.get("engine", "")
    )
    return render(request, "_version_options.html", chosen=chosen, selected="")


@router.post("/instances")
async def create(request: Request) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    values = {key: form.get(key, "").strip() for key in ("name", "engine", "version")}
    try:
        data = InstanceCreate(
            name=values["name"], engine=values["engine"] or None, version=values["version"] or None
        )
        await cp_of(request).instances.create(viewer.account, data)
    except ValidationError as exc:
        errors = validation_errors(exc.errors())  # type: ignore[arg-type]
        return await _page(request, values=values, errors=errors, status=422)
    except ServiceError as exc:
        return await _page(request, values=values, errors=field_errors(exc, "name"), status=422)
    return redirect(f"/instances/{data.name}", notice="created")
