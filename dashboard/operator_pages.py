"""Operators' pages: the fleet (sort and filter), accounts (suspend/resume), system health
(disk, memory, instances running and asleep) and engine versions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from control_plane.services.errors import ServiceError
from dashboard.views import InstanceView, instance_view
from dashboard.web import (
    PageRoute,
    checked_form,
    cp_of,
    field_errors,
    redirect,
    render,
    require_operator,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)

_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FleetRow:
    instance: InstanceView
    owner_email: str
    owner_suspended: bool


SORTS: dict[str, Callable[[FleetRow], Any]] = {
    "name": lambda r: r.instance.name,
    "owner": lambda r: r.owner_email,
    "state": lambda r: r.instance.status,
    "memory": lambda r: r.instance.memory_bytes or 0,
    "disk": lambda r: r.instance.disk_bytes or 0,
    "last_request": lambda r: r.instance.last_request or _EPOCH,
    "created": lambda r: r.instance.created,
}
DESCENDING_FIRST = frozenset({"memory", "disk", "last_request", "created"})


@router.get("/fleet")
async def fleet(request: Request) -> Response:
    await require_operator(request)
    cp = cp_of(request)
    query = request.query_params.get("q", "").strip().lower()
    state = request.query_params.get("state", "")
    sort = request.query_params.get("sort", "name")
    sort = sort if sort in SORTS else "name"
    descending = request.query_params.get("dir", "desc" if sort in DESCENDING_FIRST else "asc")
    rows = [
        FleetRow(instance_view(cp.settings, row), owner.email, owner.suspended_at is not None)
        for row, owner in await cp.instances.fleet()
    ]
    states = sorted({row.instance.status for row in rows})
    shown = [
        row
        for row in rows
        if (not query or query in row.instance.name or query in row.owner_email)
        and (not state or row.instance.status == state)
    ]
    shown.sort(key=SORTS[sort], reverse=descending == "desc")
    return render(
        request,
        "fleet.html",
        rows=shown,
        total=len(rows),
        states=states,
        query=query,
        state=state,
        sort=sort,
        direction=descending,
        sorts=list(SORTS),
    )


@router.get("/accounts")
async def accounts(request: Request) -> Response:
    await require_operator(request)
    cp = cp_of(request)
    counts: dict[str, int] = {}
    for _row, owner in await cp.instances.fleet():
        counts[owner.id] = counts.get(owner.id, 0) + 1
    return render(
        request, "accounts.html", accounts=await cp.accounts.list_accounts(), counts=counts
    )


@router.post("/accounts/{account_id}/suspend")
async def suspend(request: Request, account_id: str) -> Response:
    await require_operator(request)
    await checked_form(request)
    await cp_of(request).accounts.set_suspended(account_id, True)
    return redirect("/accounts", notice="suspended_account")


@router.post("/accounts/{account_id}/resume")
async def resume(request: Request, account_id: str) -> Response:
    await require_operator(request)
    await checked_form(request)
    await cp_of(request).accounts.set_suspended(account_id, False)
    return redirect("/accounts", notice="resumed_account")


async def _system(
    request: Request, errors: dict[str, str] | None = None, status: int = 200
) -> Response:
    await require_operator(request)
    cp = cp_of(request)
    return render(
        request,
        "system.html",
        status,
        health=await cp.system.health(),
        engines=cp.engine_admin.list_engines(),
        errors=errors or {},
    )


@router.get("/system")
async def system(request: Request) -> Response:
    return await _system(request)


@router.post("/system/engines")
async def install_engine(request: Request) -> Response:
    await require_operator(request)
    form = await checked_form(request)
    try:
        await cp_of(request).engine_admin.install(
            form.get("engine", ""), form.get("version", "").strip()
        )
    except ServiceError as exc:
        return await _system(request, field_errors(exc, "version"), 422)
    return redirect("/system", notice="engine_installed")
