"""What a provider does beyond "copy these fields": small named functions that providers.json
refers to, each reproducing one branch of PocketBase's tools/auth/<provider>.go.

- RAW_SOURCES (``userInfo.source``): where the user document comes from. ``userinfo`` is an
  HTTP request to the user-info URL with the token (a status >= 400 is an error); ``oidc`` is
  that when a user-info URL is set, else the id_token's claims (``aud`` = client id, ``iat``
  checked, ``extra.issuers`` and ``extra.jwksURL`` checked when configured); ``apple_id_token``
  is the id_token's claims, always verified against Apple's JWKS (``exp`` required, ``iss``
  Apple, ``aud`` the client id).
- QUIRKS (``quirks``): run in order after the fields are copied; they may change the user,
  make the provider's extra requests (GitHub's and Gitea's ``/emails``, Bitbucket's, Gitee's),
  or refuse the user with `UserInfoError` (inactive accounts, empty answers).
- CONFIGURE (``configure``): adjusts a resolved provider (Microsoft asks for ``openid`` when it
  reads the email from the id_token).

Contract: a quirk only reads the context and mutates ``ctx.user``; every HTTP call goes through
``ctx.http`` with the token's Authorization header, as x/oauth2's client does.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx

from . import idtoken
from .fields import FieldTypeError, cast_bool, cast_string, decode_json, decode_object, go_sprint
from .fields import typed as typed_value
from .models import AuthUser, ResolvedProvider, Token, UserInfoError

GITEE_EMAILS_URL = "https://gitee.com/api/v5/emails"
APPLE_ISSUER = "https://appleid.apple.com"
DISCORD_AVATAR = "https://cdn.discordapp.com/avatars/{id}/{hash}.png"
YANDEX_AVATAR = "https://avatars.yandex.net/get-yapic/{id}/islands-200"
# govalidator's IsEmail as ozzo-validation's is.EmailFormat uses it, simplified: a local part
# and a dotted or plain host, no spaces
EMAIL_FORMAT = re.compile(r"^[^\s@]+@[^\s@.]+(\.[^\s@.]+)*$")


async def authorized_request(
    http: httpx.AsyncClient,
    token: Token,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    content: str | None = None,
) -> httpx.Response:
    """``url`` with the token's Authorization header (x/oauth2's client); a transport failure
    is a UserInfoError."""
    sent = {**(headers or {}), "Authorization": token.authorization()}
    try:
        return await http.request(method, url, headers=sent, content=content)
    except _http_error() as error:
        raise UserInfoError(f"{method} {url}: {error}") from error


@dataclass
class Context:
    """One login's state while its user is read."""

    provider: ResolvedProvider
    token: Token
    http: httpx.AsyncClient
    fields: dict[str, Any]
    user: AuthUser

    async def get(self, url: str) -> httpx.Response:
        return await authorized_request(self.http, self.token, "GET", url)


RawSource = Callable[[ResolvedProvider, Token, "httpx.AsyncClient"], Awaitable[dict[str, Any]]]
Quirk = Callable[[Context], Awaitable[None]]


# --- where the user document comes from ------------------------------------------------------


async def userinfo_request(
    provider: ResolvedProvider, token: Token, http: httpx.AsyncClient
) -> dict[str, Any]:
    spec = provider.spec.user_info
    headers = {
        name: value.replace("{clientId}", provider.client_id)
        for name, value in spec.headers.items()
    }
    url = provider.user_info_url
    response = await authorized_request(
        http, token, spec.method, url, headers=headers, content=spec.body or None
    )
    if response.status_code >= 400:
        raise UserInfoError(
            f"failed to fetch OAuth2 user profile via {url} ({response.status_code}):\n"
            f"{response.text}"
        )
    try:
        return decode_object(response.content)
    except FieldTypeError as error:
        raise UserInfoError(str(error)) from error


def _id_token(token: Token) -> str:
    value = token.extra("id_token")
    return value if isinstance(value, str) else ""


async def oidc_userinfo_or_id_token(
    provider: ResolvedProvider, token: Token, http: httpx.AsyncClient
) -> dict[str, Any]:
    if provider.user_info_url:
        return await userinfo_request(provider, token, http)
    raw = _id_token(token)
    claims = idtoken.unverified_claims(raw)
    idtoken.validate_claims(claims, audience=provider.client_id)
    issuers = provider.extra.get("issuers")  # cast.ToStringSlice: a string splits on spaces
    if isinstance(issuers, str):
        issuers = issuers.split()
    if isinstance(issuers, list) and issuers:
        allowed = [cast_string(issuer) for issuer in issuers]
        found = claims.get("iss")
        if (found if isinstance(found, str) else "") not in allowed:
            raise UserInfoError(f"iss must be one of {allowed}, got {found!r}")
    jwks_url = cast_string(provider.extra.get("jwksURL"))
    if jwks_url:
        await idtoken.verify_signature(raw, jwks_url, http)
    return claims


async def apple_id_token(
    provider: ResolvedProvider, token: Token, http: httpx.AsyncClient
) -> dict[str, Any]:
    raw = _id_token(token)
    claims = idtoken.unverified_claims(raw)
    idtoken.validate_claims(
        claims, require_exp=True, audience=provider.client_id, issuer=APPLE_ISSUER
    )
    await idtoken.verify_signature(raw, provider.spec.jwks_url, http)
    return claims


RAW_SOURCES: dict[str, RawSource] = {
    "userinfo": userinfo_request,
    "oidc": oidc_userinfo_or_id_token,
    "apple_id_token": apple_id_token,
}


# --- emails from separate endpoints -----------------------------------------------------------


def _typed_items(document: Any, kinds: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A JSON array of objects decoded into Go structs of ``kinds`` (FieldTypeError else)."""
    if document is None:
        return []
    if not isinstance(document, list):
        raise FieldTypeError("expected a JSON array")
    items: list[dict[str, Any]] = []
    for item in document:
        if item is not None and not isinstance(item, dict):
            raise FieldTypeError("expected a JSON object")
        values = item or {}
        items.append(
            {name: typed_value(values.get(name), kind, name) for name, kind in kinds.items()}
        )
    return items


async def _verified_primary_email(ctx: Context, url: str) -> str:
    """GitHub's and Gitea's ``/emails``: the first verified primary address; 401, 403 and 404
    (a scope not granted) give ""."""
    response = await ctx.get(url)
    if response.status_code in (401, 403, 404):
        return ""
    try:
        emails = _typed_items(
            decode_json(response.content),
            {"email": "string", "verified": "bool", "primary": "bool"},
        )
    except FieldTypeError as error:
        raise UserInfoError(f"failed to fetch primary email: {error}") from error
    for entry in emails:
        if entry["verified"] and entry["primary"]:
            return str(entry["email"])
    return ""


async def github_verified_primary_email(ctx: Context) -> None:
    ctx.user.email = await _verified_primary_email(ctx, ctx.provider.user_info_url + "/emails")


async def gitea_verified_primary_email(ctx: Context) -> None:
    ctx.user.email = await _verified_primary_email(ctx, ctx.provider.user_info_url + "/emails")


async def bitbucket_primary_email(ctx: Context) -> None:
    response = await ctx.get(ctx.provider.user_info_url + "/emails")
    if response.status_code >= 400:
        ctx.user.email = ""
        return
    try:
        document = decode_json(response.content)
        if document is not None and not isinstance(document, dict):
            raise FieldTypeError("expected a JSON object")
        values = _typed_items(
            (document or {}).get("values"),
            {"email": "string", "is_primary": "bool", "is_confirmed": "bool"},
        )
    except FieldTypeError as error:
        raise UserInfoError(str(error)) from error
    ctx.user.email = next(
        (str(v["email"]) for v in values if v["is_primary"] and v["is_confirmed"]), ""
    )


def is_email_format(value: str) -> bool:
    return bool(EMAIL_FORMAT.match(value))


async def gitee_email(ctx: Context) -> None:
    """The public email when it is a valid address, else the first confirmed primary one of
    Gitee's ``/emails`` (any failure to read it, e.g. a private address, gives "")."""
    public = str(ctx.fields.get("email") or "")
    if public and is_email_format(public):
        ctx.user.email = public
        return
    ctx.user.email = ""
    response = await ctx.get(GITEE_EMAILS_URL)
    if response.status_code in (401, 403, 404):
        return
    try:
        emails = _typed_items(
            decode_json(response.content), {"email": "string", "state": "string", "scope": "any"}
        )
        for entry in emails:  # []string, or Go's decode fails (and the error is ignored)
            scopes = entry["scope"]
            if scopes is not None and not (
                isinstance(scopes, list) and all(isinstance(s, str) for s in scopes)
            ):
                raise FieldTypeError("scope is not an array of strings")
    except FieldTypeError:
        return
    for entry in emails:
        email = str(entry["email"])
        primary = "primary" in (entry["scope"] or [])
        if entry["state"] == "confirmed" and primary and is_email_format(email):
            ctx.user.email = email
            return


# --- refusals ---------------------------------------------------------------------------------


def _refuse_unless(condition: bool, message: str) -> None:
    if not condition:
        raise UserInfoError(message)


async def bitbucket_active(ctx: Context) -> None:
    _refuse_unless(ctx.fields["accountStatus"] == "active", "the Bitbucket user is not active")


async def box_active(ctx: Context) -> None:
    status = str(ctx.fields["status"])
    _refuse_unless(status == "active", f'Box user account is not active (status: "{status}")')


async def gitea_active(ctx: Context) -> None:
    _refuse_unless(bool(ctx.fields["active"]), "user account is not active")


async def linear_active(ctx: Context) -> None:
    _refuse_unless(bool(ctx.fields["active"]), "the Linear user account is not active")


async def mailcow_active(ctx: Context) -> None:
    _refuse_unless(ctx.fields["active"] == 1, "the mailcow user is not active")


async def monday_enabled(ctx: Context) -> None:
    _refuse_unless(bool(ctx.fields["enabled"]), "the monday.com user account is not enabled")


async def planningcenter_active(ctx: Context) -> None:
    _refuse_unless(ctx.fields["status"] == "active", "the user is not active")


def _first_entry_count(ctx: Context, member: str) -> int:
    entries = ctx.user.raw_user.get(member)
    return len(entries) if isinstance(entries, list) else 0


async def twitch_require_data(ctx: Context) -> None:
    _refuse_unless(_first_entry_count(ctx, "data") > 0, "failed to fetch AuthUser data")


async def vk_require_response(ctx: Context) -> None:
    _refuse_unless(_first_entry_count(ctx, "response") > 0, "missing response entry")


# --- values built from several fields ---------------------------------------------------------


async def discord_avatar_and_name(ctx: Context) -> None:
    avatar_hash = str(ctx.fields["avatarHash"])
    if avatar_hash:
        ctx.user.avatar_url = DISCORD_AVATAR.format(id=ctx.user.id, hash=avatar_hash)
    name = str(ctx.fields["globalName"])
    if not name:
        name = ctx.user.username
        discriminator = str(ctx.fields["discriminator"])
        if discriminator not in ("", "0"):
            name += "#" + discriminator
    ctx.user.name = name


RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


async def gitlab_confirmed_email(ctx: Context) -> None:
    """The email only when ``confirmed_at`` is an RFC 3339 time (and not Go's zero time)."""
    text = str(ctx.fields["confirmedAt"])
    confirmed = False
    if RFC3339.match(text):
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            confirmed = moment.utctimetuple()[:6] != (1, 1, 1, 0, 0, 0)
        except (ValueError, OverflowError):
            confirmed = False
    if not confirmed:
        ctx.user.email = ""


async def instagram_permissions(ctx: Context) -> None:
    if "permissions" not in ctx.user.raw_user:
        permissions = ctx.token.extra("permissions")
        if permissions is not None:
            ctx.user.raw_user["permissions"] = permissions


async def kakao_email(ctx: Context) -> None:
    if not (ctx.fields["emailValid"] and ctx.fields["emailVerified"]):
        ctx.user.email = ""


async def mailcow_username(ctx: Context) -> None:
    if "@" in ctx.user.username:
        ctx.user.username = ctx.user.username.split("@")[0]


async def strava_id_and_name(ctx: Context) -> None:
    ctx.user.name = f"{ctx.fields['firstName']} {ctx.fields['lastName']}"
    athlete = int(ctx.fields["athleteId"])
    ctx.user.id = str(athlete) if athlete != 0 else ""


async def vk_name_and_email(ctx: Context) -> None:
    ctx.user.name = f"{ctx.fields['firstName']} {ctx.fields['lastName']}".strip()
    email = ctx.token.extra("email")
    ctx.user.email = go_sprint(email) if email is not None else ""


async def wakatime_public_photo(ctx: Context) -> None:
    ctx.user.avatar_url = str(ctx.fields["photo"]) if ctx.fields["photoPublic"] else ""


async def yandex_avatar(ctx: Context) -> None:
    if not ctx.fields["isAvatarEmpty"]:
        ctx.user.avatar_url = YANDEX_AVATAR.format(id=ctx.fields["avatarId"])


MICROSOFT_EMAIL_CLAIM = "idTokenEmailClaim"


def _microsoft_claims(token: Token) -> dict[str, Any]:
    """The id_token's claims, validated for ``iat`` only; {} when unreadable (PocketBase
    ignores the error)."""
    try:
        claims = idtoken.unverified_claims(_id_token(token))
        idtoken.validate_claims(claims)
    except UserInfoError:
        return {}
    return claims


async def microsoft_email(ctx: Context) -> None:
    """``extra.idTokenEmailClaim`` picks where the email comes from: the id_token's
    ``verified_primary_email`` (``verified_primary_email``), its ``email`` when ``xms_edov``
    (``email_and_xms_edov``), either (``any_verified``), its ``email`` as is (``email``), or
    by default Graph's ``mail``."""
    mode = ctx.provider.extra.get(MICROSOFT_EMAIL_CLAIM)

    def primary() -> str:
        value = _microsoft_claims(ctx.token).get("verified_primary_email")
        return value if isinstance(value, str) else ""

    def edov() -> str:
        claims = _microsoft_claims(ctx.token)
        value = claims.get("email")
        return value if cast_bool(claims.get("xms_edov")) and isinstance(value, str) else ""

    def plain() -> str:
        value = _microsoft_claims(ctx.token).get("email")
        return value if isinstance(value, str) else ""

    if mode == "any_verified":
        ctx.user.email = primary() or edov()
    elif mode == "verified_primary_email":
        ctx.user.email = primary()
    elif mode == "email_and_xms_edov":
        ctx.user.email = edov()
    elif mode == "email":
        ctx.user.email = plain()
    else:
        ctx.user.email = str(ctx.fields["mail"])


QUIRKS: dict[str, Quirk] = {
    quirk.__name__: quirk
    for quirk in (
        bitbucket_active,
        bitbucket_primary_email,
        box_active,
        discord_avatar_and_name,
        gitea_active,
        gitea_verified_primary_email,
        gitee_email,
        github_verified_primary_email,
        gitlab_confirmed_email,
        instagram_permissions,
        kakao_email,
        linear_active,
        mailcow_active,
        mailcow_username,
        microsoft_email,
        monday_enabled,
        planningcenter_active,
        strava_id_and_name,
        twitch_require_data,
        vk_name_and_email,
        vk_require_response,
        wakatime_public_photo,
        yandex_avatar,
    )
}


# --- provider configuration -------------------------------------------------------------------


def microsoft_openid_scope(provider: ResolvedProvider) -> ResolvedProvider:
    if cast_string(provider.extra.get(MICROSOFT_EMAIL_CLAIM)) and "openid" not in provider.scopes:
        return dataclasses.replace(provider, scopes=(*provider.scopes, "openid"))
    return provider


CONFIGURE: dict[str, Callable[[ResolvedProvider], ResolvedProvider]] = {
    "microsoft_openid_scope": microsoft_openid_scope,
}


def _http_error() -> type[Exception]:
    """httpx's base error, imported only when a request was made (httpx is loaded by then)."""
    import httpx

    return httpx.HTTPError
