"""Sign up, log in and log out (the password change is on the account page)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from pydantic import EmailStr, TypeAdapter, ValidationError

from control_plane.services.accounts import check_password
from control_plane.services.errors import ServiceError, TooManyRequests
from dashboard.web import (
    PageRoute,
    checked_form,
    clear_session,
    cp_of,
    field_errors,
    optional_viewer,
    redirect,
    render,
    safe_next,
    set_session,
    validation_errors,
)

router = APIRouter(route_class=PageRoute, include_in_schema=False)
_email = TypeAdapter(EmailStr)


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/")
async def home(request: Request) -> Response:
    viewer = await optional_viewer(request)
    return redirect("/instances" if viewer else "/login")


@router.get("/signup")
async def signup_page(request: Request) -> Response:
    if await optional_viewer(request):
        return redirect("/instances")
    return render(request, "signup.html", mode=cp_of(request).settings.signup, values={}, errors={})


@router.post("/signup")
async def signup(request: Request) -> Response:
    form = await checked_form(request)
    cp = cp_of(request)
    values = {"email": form.get("email", "").strip(), "invite": form.get("invite", "").strip()}
    password = form.get("password", "")
    errors: dict[str, str] = {}
    try:
        email = _email.validate_python(values["email"])  # the API's rule (`AccountCreate`)
    except ValidationError as exc:
        errors.update(validation_errors([{**exc.errors()[0], "loc": ("email",)}]))
    try:
        check_password(password)
    except ServiceError as exc:
        errors.update(field_errors(exc, "password"))
    if not errors:
        try:
            await cp.accounts.sign_up(email, password, values["invite"] or None)
            token, _row = await cp.auth.log_in(email, password, _client_ip(request))
        except ServiceError as exc:
            errors = field_errors(exc, "email")
    if errors:
        return render(
            request, "signup.html", 422, mode=cp.settings.signup, values=values, errors=errors
        )
    response = redirect("/instances", notice="welcome")
    set_session(request, response, token)
    return response


@router.get("/login")
async def login_page(request: Request) -> Response:
    next_path = safe_next(request.query_params.get("next"))
    if await optional_viewer(request):
        return redirect(next_path)
    return render(request, "login.html", values={}, errors={}, next=next_path)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await checked_form(request)
    next_path = safe_next(form.get("next"))
    email = form.get("email", "")
    try:
        token, _row = await cp_of(request).auth.log_in(
            email, form.get("password", ""), _client_ip(request)
        )
    except ServiceError as exc:
        errors = field_errors(exc, "password")
        status = 429 if isinstance(exc, TooManyRequests) else 401 if exc.status == 401 else 403
        values = {"email": email}
        return render(request, "login.html", status, values=values, errors=errors, next=next_path)
    response = redirect(next_path)
    set_session(request, response, token)
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await checked_form(request)
    viewer = await optional_viewer(request)
    if viewer is not None:
        await cp_of(request).auth.revoke(viewer.account, viewer.session.id)
    response = redirect("/login", notice="logged_out")
    clear_session(response)
    return response
