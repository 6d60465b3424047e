"""PocketBase's OAuth2 client layer: every provider PocketBase 0.40.6 ships, described as data
(providers.json), one client for all of them (client.py), and the guarded download of
avatars (safe_http.py).

    info = auth_method_info("github", collection_provider_json)        # auth-methods entry
    user = await fetch_auth_user("github", collection_provider_json,
                                 code, code_verifier, redirect_url)     # auth-with-oauth2
    avatar = await safe_fetch(user.avatar_url)                           # mapped file field

This package imports nothing of the runtime's core; it knows providers, tokens and users, not
collections or records.
"""

from .client import (
    auth_method_info,
    build_auth_url,
    exchange_code,
    fetch_auth_user,
    fetch_user,
    new_pkce,
    new_state,
)
from .models import (
    AuthUser,
    OAuth2Error,
    ProviderConfig,
    ProviderSpec,
    ResolvedProvider,
    Token,
    TokenExchangeError,
    UnknownProviderError,
    UserInfoError,
)
from .providers import PROVIDERS, get_provider, map_user, provider_names, resolve_provider
from .safe_http import (
    DEFAULT_MAX_BYTES,
    DisallowedAddressError,
    SafeDownload,
    SafeFetchError,
    is_public_address,
    safe_fetch,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "PROVIDERS",
    "AuthUser",
    "DisallowedAddressError",
    "OAuth2Error",
    "ProviderConfig",
    "ProviderSpec",
    "ResolvedProvider",
    "SafeDownload",
    "SafeFetchError",
    "Token",
    "TokenExchangeError",
    "UnknownProviderError",
    "UserInfoError",
    "auth_method_info",
    "build_auth_url",
    "exchange_code",
    "fetch_auth_user",
    "fetch_user",
    "get_provider",
    "is_public_address",
    "map_user",
    "new_pkce",
    "new_state",
    "provider_names",
    "resolve_provider",
    "safe_fetch",
]
