"""The dashboard's plumbing: templates, cookie sessions, CSRF, and refusals shown as pages.

Sessions are the `AuthService` session tokens, kept in an HttpOnly, SameSite=Lax cookie
(Secure when served over https). Every form carries a CSRF token derived from a secret only
the browser's cookies hold (the session token once logged in, a random visitor cookie before):
`HMAC(secret, "pocketfleet-csrf")`. A POST without the right token, or from another origin,
is refused with 403 before anything else runs.

With `PF_PUBLIC_SCHEME=https` both cookies carry the `__Host-` prefix (`__Host-pf_session`,
`__Host-pf_visitor`): browsers then accept them only with Secure, `Path=/` and no Domain, so
that no other host (an instance under the same domain included) and no plain-HTTP response
can set or shadow them. Over plain http they are `pf_session` and `pf_visitor`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from control_plane.context import ControlPlane
from control_plane.db.models import Account, ApiToken
from control_plane.services.auth import SESSION
from control_plane.services.errors import Forbidden, ServiceError, Unauthorized

SESSION_COOKIE = "pf_session"
VISITOR_COOKIE = "pf_visitor"
SECURE_PREFIX = "__Host-"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'self'; frame-ancestors 'none'"
)

# Messages shown after a redirect (`?notice=KEY`): a fixed set, so a link cannot inject text.
NOTICES = {
    "welcome": "Welcome! Create your first instance below.",
    "logged_out": "You are logged out.",
    "expired": "Your session has expired; log in again.",
    "suspended": "This account is suspended; contact an operator.",
    "created": "Instance created: it is starting.",
    "started": "Instance started.",
    "stopped": "Instance stopped.",
    "upgraded": "Version changed; the instance restarted on it.",
    "env_saved": "Variable saved; the instance restarts with it.",
    "env_removed": "Variable removed; the instance restarts without it.",
    "deleted": "Instance deleted.",
    "password_changed": "Password changed; your other sessions were logged out.",
    "token_revoked": "Token revoked.",
    "suspended_account": "Account suspended; its instances are stopping.",
    "resumed_account": "Account resumed.",
    "engine_installed": "Engine version installed.",
    "hibernated": "Instance hibernated: it wakes on its next request.",
    "woken": "Instance woken.",
    "backed_up": "Backup made.",
    "restoring": "Restore started: the instance restarts on the backup's data.",
    "schedule_saved": "Backup schedule saved.",
    "domain_added": "Domain added: publish the records below, then verify it.",
    "domain_verified": "Domain verified: it is served now.",
    "domain_removed": "Domain removed: it is not served any more.",
}


def cp_of(request: Request) -> ControlPlane:
    cp: ControlPlane = request.app.state.cp
    return cp


@dataclass(frozen=True)
class Viewer:
    """The logged-in account of a request and its session."""

    account: Account
    session: ApiToken


class LoginRequired(Exception):
    """No valid session: go to the login page (`reason`: "", "expired" or "suspended")."""

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class CsrfRejected(Exception):
    """A POST without the right CSRF token, or from another origin."""


# ----- templates


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    return f"{duration((datetime.now(UTC) - value).total_seconds())} ago"


def duration(seconds: float | None) -> str:
    """`75` -> `1 min`, `7300` -> `2 h 1 min`: short, for people."""
    if seconds is None:
        return "–"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if hours < 1:
        return f"{minutes} min"
    if days < 1:
        return f"{hours} h {minutes % 60} min"
    return f"{days} d {hours % 24} h"


def human_bytes(value: int | None) -> str:
    if value is None:
        return "–"
    size = float(value)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit in ("B", "KB") else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _iso(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""


templates = Environment(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters.update(ago=_ago, duration=duration, bytes=human_bytes, iso=_iso)


def _secure(request: Request) -> bool:
    return cp_of(request).settings.public_scheme == "https" or request.url.scheme == "https"


def cookie_name(request: Request, name: str) -> str:
    """The name cookie `name` has on this server: `__Host-NAME` under PF_PUBLIC_SCHEME=https."""
    https = cp_of(request).settings.public_scheme == "https"
    return SECURE_PREFIX + name if https else name


def _cookie(request: Request, name: str) -> str | None:
    return request.cookies.get(cookie_name(request, name))


def _csrf_secret(request: Request) -> tuple[str, bool]:
    """The secret this browser's CSRF tokens derive from, and whether it is a new one."""
    secret = _cookie(request, SESSION_COOKIE) or _cookie(request, VISITOR_COOKIE)
    if secret:
        return secret, False
    cached: str | None = getattr(request.state, "new_visitor", None)
    if cached is None:
        cached = request.state.new_visitor = secrets.token_urlsafe(24)
    return cached, True


def csrf_token(secret: str) -> str:
    return hmac.new(secret.encode(), b"pocketfleet-csrf", hashlib.sha256).hexdigest()


def harden(response: Response) -> Response:
    """Headers every dashboard page carries."""
    response.headers["content-security-policy"] = CSP
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["x-frame-options"] = "DENY"
    response.headers["cache-control"] = "no-store"
    return response


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page (or an htmx fragment) with what every template may use."""
    secret, new_visitor = _csrf_secret(request)
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    html = templates.get_template(template).render(
        request=request,
        viewer=viewer,
        csrf=csrf_token(secret),
        csrf_field=CSRF_FIELD,
        notice=notice,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(html, status_code=status)
    if new_visitor:
        response.set_cookie(
            cookie_name(request, VISITOR_COOKIE),
            secret,
            path="/",
            httponly=True,
            samesite="lax",
            secure=_secure(request),
        )
    harden(response)
    return response


def redirect(url: str, *, notice: str | None = None) -> RedirectResponse:
    """303 See Other (a POST answered by a GET), optionally with a notice to show there."""
    if notice:
        url += ("&" if "?" in url else "?") + f"notice={notice}"
    return RedirectResponse(url, status_code=303)


def safe_next(value: str | None) -> str:
    """A local path to go back to after logging in; anything else goes to the instances.

    Browsers ignore tabs and newlines in URLs and read `\\` as `/`, so a path holding any
    of them (or other control characters) could become `//other.site`: refused too.
    """
    if (
        value
        and value.startswith("/")
        and value.isprintable()
        and "\\" not in value
        and not urlsplit(value).netloc
        and not value.startswith("//")
    ):
        return value
    return "/instances"


# ----- sessions


def set_session(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        cookie_name(request, SESSION_COOKIE),
        token,
        max_age=cp_of(request).settings.session_ttl_s,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(request),
    )


def clear_session(response: Response) -> None:
    """Delete the session cookie under both of its names (one of them was never set, but a
    server switched between http and https may have left the other)."""
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    response.delete_cookie(
        SECURE_PREFIX + SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=True
    )


async def optional_viewer(request: Request) -> Viewer | None:
    """The viewer, or None without a valid session (an expired cookie is not an error here)."""
    try:
        return await require_viewer(request)
    except LoginRequired:
        return None


async def require_viewer(request: Request) -> Viewer:
    """The logged-in viewer; `LoginRequired` otherwise (the page becomes a redirect)."""
    token = _cookie(request, SESSION_COOKIE)
    if not token:
        raise LoginRequired()
    try:
        account, row = await cp_of(request).auth.authenticate(token)
    except Unauthorized as exc:
        raise LoginRequired("expired") from exc
    except Forbidden as exc:
        raise LoginRequired("suspended") from exc
    if row.kind != SESSION:  # an API token pasted into a cookie is no login
        raise LoginRequired("expired")
    viewer = Viewer(account, row)
    request.state.viewer = viewer
    return viewer


async def require_operator(request: Request) -> Viewer:
    viewer = await require_viewer(request)
    if not viewer.account.is_operator:
        raise Forbidden("only operators may see this page")
    return viewer


async def checked_form(request: Request) -> dict[str, str]:
    """The fields of a POSTed form, once its origin and CSRF token are checked."""
    origin = request.headers.get("origin")
    if origin and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise CsrfRejected()
    form = await request.form()
    fields = {key: value for key, value in form.items() if isinstance(value, str)}
    sent = fields.pop(CSRF_FIELD, "") or request.headers.get(CSRF_HEADER, "")
    secret = _cookie(request, SESSION_COOKIE) or _cookie(request, VISITOR_COOKIE)
    if not secret or not sent or not hmac.compare_digest(sent, csrf_token(secret)):
        raise CsrfRejected()
    return fields


def field_errors(exc: ServiceError, default_field: str) -> dict[str, str]:
    """A service refusal as `{field: message}` for a form (its own field, or `default`)."""
    return {exc.field or default_field: exc.message[:1].upper() + exc.message[1:]}


def validation_errors(errors: list[Mapping[str, Any]]) -> dict[str, str]:
    """Pydantic's errors (from the API's own request schemas) as `{field: message}`."""
    found: dict[str, str] = {}
    for error in errors:
        name = str(error["loc"][0]) if error.get("loc") else "form"
        message = str(error["msg"]).removeprefix("Value error, ")
        found.setdefault(name, message[:1].upper() + message[1:])
    return found


# ----- refusals as pages


def _login_redirect(request: Request, reason: str) -> Response:
    target = "/login?next=" + quote(request.url.path)
    if reason:
        target += f"&notice={reason}"
    if request.headers.get("hx-request"):
        response: Response = Response(status_code=204, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    if reason:
        clear_session(response)
    return response


class PageRoute(APIRoute):
    """A dashboard route: a missing login becomes a redirect to the login page, a failed CSRF
    check a 403 page, and any other service refusal a page with its status and message."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired as exc:
                return _login_redirect(request, exc.reason)
            except CsrfRejected:
                await optional_viewer(request)
                message = (
                    "This form was not accepted: it has expired or did not come from this "
                    "site. Go back, reload the page and try again."
                )
                return render(request, "error.html", 403, title="Form refused", message=message)
            except ServiceError as exc:
                await optional_viewer(request)
                title = "Not found" if exc.status == 404 else "Not allowed"
                return render(request, "error.html", exc.status, title=title, message=exc.message)

        return run
