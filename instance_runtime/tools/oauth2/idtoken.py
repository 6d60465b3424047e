"""id_token claims as PocketBase reads them: golang-jwt's ``ParseUnverified`` plus its
``Validator`` for the time, audience and issuer claims, and, when a JWKS URL is known,
tools/auth/internal/jwk's signature check.

Contract: `unverified_claims` returns the payload object of a compact JWS without checking the
signature; `validate_claims` raises `UserInfoError` as golang-jwt's validator would (``exp``
checked when present or required, ``nbf`` when present, ``iat`` when asked, all with
`leeway()` seconds; ``aud`` must contain the audience; ``iss`` must equal the issuer);
`verify_signature` fetches the JWKS, takes the key whose ``kid`` is the token's and whose
``alg`` is set (``RSA`` or Ed25519 ``OKP`` keys only), and checks the signature with that
algorithm only, and ``exp``/``nbf`` without leeway (golang-jwt's default parser).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jwt

if TYPE_CHECKING:
    import httpx

from .fields import FieldTypeError, decode_json, decode_object
from .models import UserInfoError

DEFAULT_LEEWAY = 5 * 60


def leeway() -> int:
    """Seconds of tolerance for the time claims: ``PB_ID_TOKEN_LEEWAY`` as PocketBase reads it,
    else 5 minutes."""
    text = os.environ.get("PB_ID_TOKEN_LEEWAY", "")
    try:
        return int(text)
    except ValueError:
        return DEFAULT_LEEWAY


def _parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    if not token:
        raise UserInfoError("empty id_token")
    try:
        unverified = jwt.api_jws.PyJWS().decode_complete(token, options={"verify_signature": False})
        header = unverified["header"]
        claims = decode_object(unverified["payload"])
    except (jwt.PyJWTError, FieldTypeError) as error:
        raise UserInfoError(f"invalid id_token: {error}") from error
    return dict(header), claims


def unverified_claims(token: str) -> dict[str, Any]:
    return _parts(token)[1]


def _numeric_date(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserInfoError(f"token has invalid claims: invalid type for claim {name}")
    return float(value)


def _string_list(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise UserInfoError(f"token has invalid claims: invalid type for claim {name}")


def validate_claims(
    claims: Mapping[str, Any],
    *,
    require_exp: bool = False,
    verify_iat: bool = True,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> None:
    moment = time.time() if now is None else now
    slack = leeway()
    exp = _numeric_date(claims, "exp")
    if exp is None and require_exp:
        raise UserInfoError("token is missing required claim: exp claim is required")
    if exp is not None and not moment < exp + slack:
        raise UserInfoError("token has invalid claims: token is expired")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and moment < nbf - slack:
        raise UserInfoError("token has invalid claims: token is not valid yet")
    if verify_iat:
        iat = _numeric_date(claims, "iat")
        if iat is not None and moment < iat - slack:
            raise UserInfoError("token has invalid claims: token used before issued")
    if audience is not None:
        audiences = _string_list(claims, "aud")
        if not "".join(audiences):
            raise UserInfoError("token is missing required claim: aud claim is required")
        if audience not in audiences:
            raise UserInfoError("token has invalid claims: token has invalid audience")
    if issuer is not None:
        found = claims.get("iss")
        if found is not None and not isinstance(found, str):
            raise UserInfoError("token has invalid claims: invalid type for claim iss")
        if not found:
            raise UserInfoError("token is missing required claim: iss claim is required")
        if found != issuer:
            raise UserInfoError("token has invalid claims: token has invalid issuer")


async def verify_signature(token: str, jwks_url: str, http: httpx.AsyncClient) -> None:
    header, _ = _parts(token)
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise UserInfoError("missing kid header value")
    try:
        response = await http.get(jwks_url)
    except _http_error() as error:
        raise UserInfoError(f"failed to fetch JSON Web Key Set from {jwks_url}: {error}") from error
    if response.status_code >= 400:
        raise UserInfoError(
            f"failed to fetch JSON Web Key Set from {jwks_url} ({response.status_code}):\n"
            f"{response.text}"
        )
    try:
        document = decode_json(response.content)
    except FieldTypeError as error:
        raise UserInfoError(f"invalid JSON Web Key Set: {error}") from error
    keys = document.get("keys") if isinstance(document, dict) else None
    found = None
    for key in keys if isinstance(keys, list) else []:
        if isinstance(key, dict) and key.get("kid") == kid and key.get("alg"):
            found = key
            break
    if found is None:
        raise UserInfoError(f"missing JWK with kid {kid!r} and non-empty alg")
    if found.get("kty") not in ("RSA", "OKP"):
        raise UserInfoError(f"unsupported kty (must be RSA or OKP): {found.get('kty')!r}")
    if found.get("kty") == "OKP" and found.get("crv") != "Ed25519":
        raise UserInfoError(f"unsupported OKP curve (must be Ed25519): {found.get('crv')!r}")
    algorithm = str(found["alg"])
    try:
        public_key = jwt.PyJWK(found, algorithm).key
        jwt.decode(
            token,
            public_key,
            algorithms=[algorithm],
            options={"verify_aud": False, "verify_iss": False, "verify_iat": False},
        )
    except (jwt.PyJWTError, ValueError, TypeError) as error:
        raise UserInfoError(f"id_token validation failed: {error}") from error


def _http_error() -> type[Exception]:
    """httpx's base error, imported only when a request was made (httpx is loaded by then)."""
    import httpx

    return httpx.HTTPError
