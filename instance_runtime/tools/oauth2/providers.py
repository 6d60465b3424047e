"""Every OAuth2 provider PocketBase 0.40.6 ships, as data (providers.json beside this file), and
the two steps that need only data: applying a collection's config to a provider, and mapping
a user-info document to an `AuthUser`.

providers.json holds one object per provider with PocketBase's defaults (``name``,
``displayName``, ``order``, ``pkce``, ``scopes``, ``authURL``, ``tokenURL``, ``userInfoURL``,
``logo``; Apple's ``jwksURL`` and ``authParams``), how its user is read (``userInfo``: a source
of quirks.RAW_SOURCES with the request's method, headers and body), its ``fields`` (name ->
``"path:kind"``, see fields.py), ``emailVerifiedBy`` (the field that must be true for the email
to be kept), and the names of its ``quirks`` and ``configure`` functions in quirks.py.

Contract: `PROVIDERS` is keyed by name in PocketBase's order (``order``, then name); every
referenced quirk exists (checked at import). `get_provider` raises `UnknownProviderError`.
`resolve_provider` is PocketBase's ``InitProvider``: a config's non-empty values replace the
defaults (``pkce`` when set, ``extra`` when not None). `map_user` copies the fields into a new
user and applies ``emailVerifiedBy``; it raises `UserInfoError` where PocketBase's decode fails.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from .fields import FieldTypeError, cast_bool, extract_all, parse_field
from .models import (
    AuthUser,
    ProviderConfig,
    ProviderSpec,
    ResolvedProvider,
    Token,
    UnknownProviderError,
    UserInfoError,
    UserInfoRequest,
)
from .quirks import CONFIGURE, QUIRKS, RAW_SOURCES

USER_FIELDS = {
    "id": "id",
    "name": "name",
    "username": "username",
    "email": "email",
    "avatarURL": "avatar_url",
}


def _spec(data: Mapping[str, Any]) -> ProviderSpec:
    info = data.get("userInfo") or {}
    spec = ProviderSpec(
        name=data["name"],
        display_name=data["displayName"],
        order=int(data["order"]),
        pkce=bool(data["pkce"]),
        scopes=tuple(data.get("scopes") or ()),
        auth_url=data.get("authURL", ""),
        token_url=data.get("tokenURL", ""),
        user_info_url=data.get("userInfoURL", ""),
        user_info=UserInfoRequest(
            source=info.get("source", "userinfo"),
            method=info.get("method", "GET"),
            headers=dict(info.get("headers") or {}),
            body=info.get("body", ""),
        ),
        fields={name: parse_field(text) for name, text in data["fields"].items()},
        logo=data.get("logo", ""),
        jwks_url=data.get("jwksURL", ""),
        auth_params=dict(data.get("authParams") or {}),
        email_verified_by=data.get("emailVerifiedBy", ""),
        quirks=tuple(data.get("quirks") or ()),
        configure=data.get("configure", ""),
    )
    unknown = [q for q in spec.quirks if q not in QUIRKS]
    if spec.user_info.source not in RAW_SOURCES:
        unknown.append(spec.user_info.source)
    if spec.configure and spec.configure not in CONFIGURE:
        unknown.append(spec.configure)
    if spec.email_verified_by and spec.email_verified_by not in spec.fields:
        unknown.append(spec.email_verified_by)
    if unknown:
        raise ValueError(f"provider {spec.name}: unknown {unknown}")
    return spec


def _load() -> dict[str, ProviderSpec]:
    text = resources.files(__package__).joinpath("providers.json").read_text("utf-8")
    specs = [_spec(entry) for entry in json.loads(text)["providers"]]
    specs.sort(key=lambda spec: (spec.order, spec.name))
    return {spec.name: spec for spec in specs}


PROVIDERS: Mapping[str, ProviderSpec] = _load()


def provider_names() -> list[str]:
    return list(PROVIDERS)


def get_provider(name: str) -> ProviderSpec:
    try:
        return PROVIDERS[name]
    except KeyError:
        raise UnknownProviderError(name) from None


def resolve_provider(
    provider: ProviderSpec | str, config: ProviderConfig | Mapping[str, Any]
) -> ResolvedProvider:
    """``config`` (a ProviderConfig or the collection JSON's entry) applied to ``provider``
    (a spec, or a name; None of the config's values is validated here)."""
    spec = get_provider(provider) if isinstance(provider, str) else provider
    if not isinstance(config, ProviderConfig):
        config = ProviderConfig.from_json(config)
    resolved = ResolvedProvider(
        spec=spec,
        name=config.name or spec.name,
        display_name=config.display_name or spec.display_name,
        client_id=config.client_id,
        client_secret=config.client_secret,
        auth_url=config.auth_url or spec.auth_url,
        token_url=config.token_url or spec.token_url,
        user_info_url=config.user_info_url or spec.user_info_url,
        scopes=spec.scopes,
        pkce=spec.pkce if config.pkce is None else config.pkce,
        extra=dict(config.extra) if config.extra is not None else {},
    )
    if spec.configure and config.extra is not None:
        resolved = CONFIGURE[spec.configure](resolved)
    return resolved


def map_user(
    spec: ProviderSpec, raw_user: dict[str, Any], token: Token
) -> tuple[AuthUser, dict[str, Any]]:
    """The user the document gives before quirks, and the extracted fields (for the quirks)."""
    try:
        fields = extract_all(raw_user, spec.fields)
    except FieldTypeError as error:
        raise UserInfoError(str(error)) from error
    user = AuthUser(
        raw_user=raw_user,
        access_token=token.access_token,
        refresh_token=token.refresh_token,
        expiry=token.expiry,
    )
    for field_name, attribute in USER_FIELDS.items():
        if field_name in fields:
            setattr(user, attribute, str(fields[field_name]))
    if spec.email_verified_by and not cast_bool(fields[spec.email_verified_by]):
        user.email = ""
    return user, fields
