"""The authorization side of PocketBase's OAuth2 (no network: importing it costs no HTTP
client), byte-compatible with what PocketBase 0.40.6 builds through golang.org/x/oauth2.

- `new_pkce()`: PocketBase's verifier (43 random ``[A-Za-z0-9]``) and its S256 challenge;
  `new_state()` its 30-character state.
- `build_auth_url(...)`: x/oauth2's ``AuthCodeURL`` (parameters sorted by name, Go's query
  escaping) plus PocketBase's trailing ``&redirect_uri=`` (the client appends its URL; a
  ``redirect_url`` given here is appended escaped).
- `auth_method_info(...)`: one ``oauth2.providers`` entry of ``GET .../auth-methods``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus, urlencode

from authlib.common.security import generate_token
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from .models import ProviderConfig, ProviderSpec
from .providers import resolve_provider

STATE_LENGTH = 30
VERIFIER_LENGTH = 43


def new_pkce() -> tuple[str, str]:
    """(code_verifier, code_challenge) as PocketBase's auth-methods makes them."""
    verifier = str(generate_token(VERIFIER_LENGTH))
    return verifier, str(create_s256_code_challenge(verifier))


def new_state() -> str:
    return str(generate_token(STATE_LENGTH))


def go_encode(values: Mapping[str, str]) -> str:
    """Go's ``url.Values.Encode``: sorted by key, QueryEscape'd (space as '+')."""
    return urlencode(sorted(values.items()))


def build_auth_url(
    provider: ProviderSpec | str,
    config: ProviderConfig | Mapping[str, Any],
    redirect_url: str = "",
    state: str = "",
    code_challenge: str = "",
) -> str:
    """The provider's consent page URL as auth-methods builds it; the code challenge (S256)
    is sent when the provider uses PKCE and one is given."""
    resolved = resolve_provider(provider, config)
    values = {"client_id": resolved.client_id, "response_type": "code"}
    if resolved.scopes:
        values["scope"] = " ".join(resolved.scopes)
    if state:
        values["state"] = state
    values.update(resolved.spec.auth_params)
    if resolved.pkce and code_challenge:
        values["code_challenge"] = code_challenge
        values["code_challenge_method"] = "S256"
    separator = "&" if "?" in resolved.auth_url else "?"
    return (
        f"{resolved.auth_url}{separator}{go_encode(values)}&redirect_uri={quote_plus(redirect_url)}"
    )


def auth_method_info(
    provider: ProviderSpec | str, config: ProviderConfig | Mapping[str, Any]
) -> dict[str, str]:
    """One entry of auth-methods' ``oauth2.providers`` (with the legacy ``authUrl``), with a
    fresh state and, when the provider uses PKCE, a fresh verifier/challenge (else "")."""
    resolved = resolve_provider(provider, config)
    state = new_state()
    verifier = challenge = method = ""
    if resolved.pkce:
        verifier, challenge = new_pkce()
        method = "S256"
    url = build_auth_url(resolved.spec, config, "", state, challenge)
    return {
        "name": resolved.name,
        "displayName": resolved.display_name or resolved.name,
        "logo": resolved.spec.logo,
        "state": state,
        "authURL": url,
        "authUrl": url,
        "codeVerifier": verifier,
        "codeChallenge": challenge,
        "codeChallengeMethod": method,
    }
