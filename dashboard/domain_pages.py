"""An instance's custom domains on its page: claim one, see what to publish, verify, remove
(over `DomainService`; routing and certificates follow verification, see README)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from control_plane.services.errors import ServiceError
from dashboard.instance_page import show_instance
from dashboard.web import PageRoute, checked_form, cp_of, field_errors, redirect, require_viewer

router = APIRouter(route_class=PageRoute, include_in_schema=False)


@router.post("/instances/{name}/domains")
async def add_domain(request: Request, name: str) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    domain = form.get("domain", "").strip()
    try:
        await cp_of(request).domains.add(viewer.account, name, domain)
    except ServiceError as exc:
        errors = field_errors(exc, "domain")
        values = {"domain": domain}
        return await show_instance(request, name, errors=errors, values=values, status=exc.status)
    return redirect(f"/instances/{name}", notice="domain_added")


@router.post("/instances/{name}/domains/{domain}/verify")
async def verify_domain(request: Request, name: str, domain: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    try:
        await cp_of(request).domains.verify(viewer.account, name, domain)
    except ServiceError as exc:
        errors = field_errors(exc, "domain")
        return await show_instance(request, name, errors=errors, status=exc.status)
    return redirect(f"/instances/{name}", notice="domain_verified")


@router.post("/instances/{name}/domains/{domain}/delete")
async def remove_domain(request: Request, name: str, domain: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).domains.remove(viewer.account, name, domain)
    return redirect(f"/instances/{name}", notice="domain_removed")
