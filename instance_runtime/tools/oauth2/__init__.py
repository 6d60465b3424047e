"""PocketBase's OAuth2 client layer: every provider PocketBase 0.40.6 ships, described as data
(providers.json), one client for all of them (client.py), and the guarded download of
avatars (safe_http.py).

    info = auth_method_info("github", collection_provider_json)        # auth-methods entry
    user = await fetch_auth_user("github", collection_provider_json,
                                 code, code_verifier, redirect_url)     # auth-with-oauth2
    avatar = await safe_fetch(user.avatar_url)                           # mapped file field

This package imports nothing of the runtime's core; it knows providers, tokens and users, not
collections or records. Its names load on first use (`preload()` loads them all).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Where each public name lives: the package imports a module on first use, so that importing
# it (every runtime does) costs no HTTP client until a login actually talks to a provider.
_HOMES = {
    "auth_method_info": "authorize",
    "build_auth_url": "authorize",
    "new_pkce": "authorize",
    "new_state": "authorize",
    "exchange_code": "client",
    "fetch_auth_user": "client",
    "fetch_user": "client",
    "AuthUser": "models",
    "OAuth2Error": "models",
    "ProviderConfig": "models",
    "ProviderSpec": "models",
    "ResolvedProvider": "models",
    "Token": "models",
    "TokenExchangeError": "models",
    "UnknownProviderError": "models",
    "UserInfoError": "models",
    "PROVIDERS": "providers",
    "get_provider": "providers",
    "map_user": "providers",
    "provider_names": "providers",
    "resolve_provider": "providers",
    "DEFAULT_MAX_BYTES": "safe_http",
    "DisallowedAddressError": "safe_http",
    "SafeDownload": "safe_http",
    "SafeFetchError": "safe_http",
    "is_public_address": "safe_http",
    "safe_fetch": "safe_http",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def preload() -> None:
    """Import everything now (the zygote does, so that its children share it)."""
    for home in set(_HOMES.values()):
        importlib.import_module(f"{__name__}.{home}")


if TYPE_CHECKING:
    from .authorize import auth_method_info, build_auth_url, new_pkce, new_state
    from .client import exchange_code, fetch_auth_user, fetch_user
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
