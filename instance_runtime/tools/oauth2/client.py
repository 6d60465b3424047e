"""One OAuth2 client for every provider of providers.py, built on authlib's protocol pieces
(random tokens, the S256 PKCE challenge, token-endpoint client authentication) with httpx, and
byte-compatible on the wire with what PocketBase 0.40.6 sends through golang.org/x/oauth2.

(The authorization URL, PKCE and auth-methods entries are in authorize.py, which needs no
network library.)
- `exchange_code(...)`: the token request. As x/oauth2 does for a provider whose auth style it
  has not learnt (PocketBase builds a new config per login, so always), the client id and
  secret go first in an HTTP Basic header (form-escaped, RFC 6749 §2.3.1) and, when that
  attempt fails for any reason, once more in the body: a failed exchange is sent twice.
  ``code_verifier`` is sent (even empty) exactly when the provider uses PKCE.
- `fetch_user(...)` / `fetch_auth_user(...)`: the user document (quirks.RAW_SOURCES), the field
  mapping (providers.map_user), then the provider's quirks.

Contract: `fetch_auth_user` raises `TokenExchangeError` when PocketBase answers "Failed to fetch
OAuth2 token." and `UserInfoError` when it answers "Failed to fetch OAuth2 user."; it gives up
after ``timeout`` seconds (PocketBase: 30). The token and user-info requests may go to any
address (loopback included); only avatar downloads use safe_http. Pass ``http`` to choose the
httpx client (tests give it another transport); otherwise one is made per call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote_plus

import httpx
from authlib.oauth2.auth import ClientAuth

from .authorize import go_encode
from .fields import FieldTypeError
from .models import (
    AuthUser,
    ProviderConfig,
    ProviderSpec,
    ResolvedProvider,
    Token,
    TokenExchangeError,
    UserInfoError,
)
from .providers import map_user, resolve_provider
from .quirks import QUIRKS, RAW_SOURCES, Context

DEFAULT_TIMEOUT = 30.0
MAX_TOKEN_BODY = 1 << 20  # x/oauth2 reads at most 1 MiB of a token answer
INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
JSON_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
GO_ATOI = re.compile(r"[+-]?[0-9]+")
MAX_REDIRECTS = 10  # Go's http.Client


# --- the token request ------------------------------------------------------------------------


def _client_secret_basic(
    client: ClientAuth, method: str, uri: str, headers: dict[str, str], body: str
) -> tuple[str, dict[str, str], str]:
    """HTTP Basic with the id and secret form-escaped first (RFC 6749 §2.3.1, as x/oauth2)."""
    pair = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret)}"
    headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
    return uri, headers, body


def _client_secret_post(
    client: ClientAuth, method: str, uri: str, headers: dict[str, str], body: str
) -> tuple[str, dict[str, str], str]:
    """The id and secret as body parameters (each when non-empty), the body re-sorted as
    x/oauth2 encodes it."""
    values = dict(parse_qsl(body, keep_blank_values=True))
    if client.client_id:
        values["client_id"] = client.client_id
    if client.client_secret:
        values["client_secret"] = client.client_secret
    return uri, headers, go_encode(values)


def _parse_expires_in(value: Any) -> int:
    """x/oauth2's ``expirationTime``: a JSON integer, or a string holding one, that fits an
    int64; clamped to int32. Anything else fails the token answer's decode."""
    if value is None:
        return 0
    if isinstance(value, str) and JSON_INTEGER.fullmatch(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"invalid expires_in {value!r}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(f"expires_in {value} out of range")
    return min(value, INT32_MAX)


def _expiry(seconds: int) -> datetime | None:
    if not seconds:
        return None
    return datetime.fromtimestamp(time.time(), UTC) + timedelta(seconds=seconds)


def _parse_token(response: httpx.Response, body: bytes) -> Token:
    failed = not 200 <= response.status_code <= 299
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    error = description = ""
    if content_type in ("application/x-www-form-urlencoded", "text/plain"):
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

        def first(key: str) -> str:
            return form.get(key, [""])[0]

        error, description = first("error"), first("error_description")
        expires_in = first("expires_in")
        seconds = int(expires_in) if GO_ATOI.fullmatch(expires_in) else 0
        token = Token(
            access_token=first("access_token"),
            token_type=first("token_type"),
            refresh_token=first("refresh_token"),
            expiry=_expiry(seconds),
            raw=form,
            form=True,
        )
    else:
        try:
            document = json.loads(body)  # x/oauth2 decodes with encoding/json v1
            if not isinstance(document, dict):
                raise FieldTypeError("not an object")
            texts = {}
            for key in ("access_token", "token_type", "refresh_token", "error"):
                value = document.get(key)
                if value is not None and not isinstance(value, str):
                    raise FieldTypeError(f"{key} is not a string")
                texts[key] = value or ""
            description = str(document.get("error_description") or "")
            seconds = _parse_expires_in(document.get("expires_in"))
        except (FieldTypeError, ValueError, RecursionError) as parse_error:
            raise TokenExchangeError(
                f"oauth2: cannot parse json: {parse_error}"
                if not failed
                else f"oauth2: {response.status_code} {body[:200]!r}",
                status=response.status_code,
            ) from parse_error
        error = texts["error"]
        token = Token(
            access_token=texts["access_token"],
            token_type=texts["token_type"],
            refresh_token=texts["refresh_token"],
            expiry=_expiry(seconds),
            raw=document,
        )
    if failed or error:
        raise TokenExchangeError(
            f"oauth2: {error or response.status_code} {description}".strip(),
            status=response.status_code,
            error=error,
            description=description,
        )
    if not token.access_token:
        raise TokenExchangeError(
            "oauth2: server response missing access_token", status=response.status_code
        )
    return token


async def _token_round_trip(
    provider: ResolvedProvider, values: Mapping[str, str], style: Any, http: httpx.AsyncClient
) -> Token:
    auth = ClientAuth(provider.client_id, provider.client_secret, style)
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    url, headers, body = auth.prepare("POST", provider.token_url, headers, go_encode(values))
    try:
        async with http.stream("POST", url, headers=headers, content=body) as response:
            received = b""
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) >= MAX_TOKEN_BODY:
                    received = received[:MAX_TOKEN_BODY]
                    break
    except httpx.HTTPError as error:
        raise TokenExchangeError(f"oauth2: cannot fetch token: {error}") from error
    return _parse_token(response, received)


async def exchange_code(
    provider: ResolvedProvider,
    code: str,
    code_verifier: str,
    redirect_url: str,
    http: httpx.AsyncClient,
) -> Token:
    values = {"grant_type": "authorization_code", "code": code}
    if redirect_url:
        values["redirect_uri"] = redirect_url
    if provider.pkce:
        values["code_verifier"] = code_verifier
    try:
        return await _token_round_trip(provider, values, _client_secret_basic, http)
    except TokenExchangeError:
        return await _token_round_trip(provider, values, _client_secret_post, http)


# --- the user ---------------------------------------------------------------------------------


async def fetch_user(provider: ResolvedProvider, token: Token, http: httpx.AsyncClient) -> AuthUser:
    spec = provider.spec
    raw_user = await RAW_SOURCES[spec.user_info.source](provider, token, http)
    user, fields = map_user(spec, raw_user, token)
    context = Context(provider, token, http, fields, user)
    for name in spec.quirks:
        await QUIRKS[name](context)
    return context.user


@contextlib.asynccontextmanager
async def _client(
    http: httpx.AsyncClient | None, timeout: float
) -> AsyncIterator[httpx.AsyncClient]:
    if http is not None:
        yield http
        return
    async with httpx.AsyncClient(
        timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS
    ) as own:
        yield own


async def fetch_auth_user(
    provider: ProviderSpec | str,
    config: ProviderConfig | Mapping[str, Any],
    code: str,
    code_verifier: str,
    redirect_url: str,
    *,
    http: httpx.AsyncClient | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> AuthUser:
    """Exchange ``code`` and read the user, as ``auth-with-oauth2`` does before it looks for
    the record."""
    resolved = resolve_provider(provider, config)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with _client(http, timeout) as client:
        try:
            async with asyncio.timeout_at(deadline):
                token = await exchange_code(resolved, code, code_verifier, redirect_url, client)
        except TimeoutError as error:
            raise TokenExchangeError("oauth2: token request timed out") from error
        try:
            async with asyncio.timeout_at(deadline):
                return await fetch_user(resolved, token, client)
        except TimeoutError as error:
            raise UserInfoError("user-info request timed out") from error
