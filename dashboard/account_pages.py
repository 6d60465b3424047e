"""The account page: quota used, password change, API tokens (shown once; revocable)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from control_plane.schemas import TokenCreate
from control_plane.services.errors import ServiceError
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


async def _page(
    request: Request,
    *,
    errors: dict[str, str] | None = None,
    new_token: str | None = None,
    status: int = 200,
) -> Response:
    viewer = await require_viewer(request)
    cp = cp_of(request)
    return render(
        request,
        "account.html",
        status,
        tokens=await cp.auth.list_api_tokens(viewer.account),
        used=len(await cp.instances.list_owned(viewer.account)),
        quota=cp.instances.quota_of(viewer.account),
        errors=errors or {},
        new_token=new_token,
    )


@router.get("/account")
async def account(request: Request) -> Response:
    return await _page(request)


@router.post("/account/password")
async def change_password(request: Request) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    try:
        await cp_of(request).auth.change_password(
            viewer.account,
            form.get("current_password", ""),
            form.get("new_password", ""),
            keep_session=viewer.session.id,
        )
    except ServiceError as exc:
        return await _page(request, errors=field_errors(exc, "new_password"), status=422)
    return redirect("/account", notice="password_changed")


@router.post("/account/tokens")
async def create_token(request: Request) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    try:
        data = TokenCreate(name=form.get("name", "").strip())  # the API's own rule
    except ValidationError as exc:
        errors = {"token_name": validation_errors(exc.errors())["name"]}  # type: ignore[arg-type]
        return await _page(request, errors=errors, status=422)
    token, _row = await cp_of(request).auth.create_api_token(viewer.account, data.name)
    return await _page(request, new_token=token, status=201)


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).auth.revoke(viewer.account, token_id, kind="api")
    return redirect("/account", notice="token_revoked")
