"""The account page: quota used, password change, API tokens (shown once; revocable; of
scope full, or deploy for CI, optionally for chosen instances), and SSH keys for SFTP (with
the server's host key fingerprint)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import ValidationError

from control_plane.schemas import TokenCreate
from control_plane.services.errors import ServiceError
from control_plane.sftp.schemas import SshKeyCreate
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

# the SSH-key form's fields, by the API's names
_KEY_FIELDS = {"public_key": "ssh_public_key", "name": "ssh_key_name", "instances": "ssh_instances"}
# the token form's fields, by the API's names
_TOKEN_FIELDS = {"name": "token_name", "scope": "token_scope", "instances": "token_instances"}


def _key_errors(found: dict[str, str]) -> dict[str, str]:
    return {_KEY_FIELDS.get(name, "ssh_public_key"): text for name, text in found.items()}


def _token_errors(found: dict[str, str]) -> dict[str, str]:
    return {_TOKEN_FIELDS.get(name, "token_name"): text for name, text in found.items()}


async def _page(
    request: Request,
    *,
    errors: dict[str, str] | None = None,
    new_token: str | None = None,
    added_key: str | None = None,
    form: dict[str, str] | None = None,
    token_form: dict[str, str] | None = None,
    status: int = 200,
) -> Response:
    viewer = await require_viewer(request)
    cp = cp_of(request)
    return render(
        request,
        "account.html",
        status,
        tokens=await cp.auth.public(await cp.auth.list_api_tokens(viewer.account)),
        ssh_keys=await cp.ssh_keys.public(await cp.ssh_keys.list_for(viewer.account)),
        ssh_host=cp.ssh_keys.host_public(),
        added_key=added_key,
        form=form or {},
        token_form=token_form or {},
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
    listed = form.get("instances", "").strip()
    try:
        data = TokenCreate.model_validate(  # the API's own rules
            {
                "name": form.get("name", "").strip(),
                "scope": form.get("scope", "full"),
                "instances": [part.strip() for part in listed.split(",") if part.strip()] or None,
            }
        )
        token, _row = await cp_of(request).auth.create_api_token(viewer.account, data)
    except ValidationError as exc:
        found = validation_errors(exc.errors())  # type: ignore[arg-type]
        return await _page(request, errors=_token_errors(found), token_form=form, status=422)
    except ServiceError as exc:
        found = field_errors(exc, "name")
        return await _page(request, errors=_token_errors(found), token_form=form, status=exc.status)
    return await _page(request, new_token=token, status=201)


@router.post("/account/tokens/{token_id}/revoke")
async def revoke_token(request: Request, token_id: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).auth.revoke(viewer.account, token_id, kind="api")
    return redirect("/account", notice="token_revoked")


@router.post("/account/ssh-keys")
async def add_ssh_key(request: Request) -> Response:
    viewer = await require_viewer(request)
    form = await checked_form(request)
    listed = form.get("instances", "").strip()
    try:
        data = SshKeyCreate(  # the API's own rules
            public_key=form.get("public_key", ""),
            name=form.get("name", "").strip() or None,
            instances=[part.strip() for part in listed.split(",") if part.strip()] or None,
        )
        row = await cp_of(request).ssh_keys.add(viewer.account, data)
    except ValidationError as exc:
        found = validation_errors(exc.errors())  # type: ignore[arg-type]
        return await _page(request, errors=_key_errors(found), form=form, status=422)
    except ServiceError as exc:
        found = field_errors(exc, "public_key")
        return await _page(request, errors=_key_errors(found), form=form, status=exc.status)
    return await _page(request, added_key=f"{row.name} ({row.fingerprint})", status=201)


@router.post("/account/ssh-keys/{key_id}/remove")
async def remove_ssh_key(request: Request, key_id: str) -> Response:
    viewer = await require_viewer(request)
    await checked_form(request)
    await cp_of(request).ssh_keys.remove(viewer.account, key_id)
    return redirect("/account#ssh-keys-h")
