"""The values of the OAuth2 client layer: a provider's defaults (`ProviderSpec`), a collection's
per-provider settings (`ProviderConfig`, PocketBase's ``OAuth2ProviderConfig``), the two merged
(`ResolvedProvider`, what PocketBase's ``InitProvider`` returns), a token endpoint's answer
(`Token`), the normalised user (`AuthUser`, PocketBase's ``auth.AuthUser``) and the errors.

Contract: everything here is plain data without I/O. `AuthUser.email` is a VERIFIED address or
"" (PocketBase's rule: a provider that cannot vouch for the address leaves it empty).
`AuthUser.to_meta()` is the JSON PocketBase puts in ``meta`` of ``auth-with-oauth2`` (before
``isNew``). `Token.extra` and `Token.authorization` behave as golang.org/x/oauth2's
``Token.Extra`` and ``Token.Type``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

FieldKind = Literal["string", "int", "bool", "any"]


class OAuth2Error(Exception):
    """Base of the errors of this package."""


class UnknownProviderError(OAuth2Error, LookupError):
    """No provider of that name (PocketBase: ``validation_missing_provider``)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"missing provider {name}")
        self.name = name


class TokenExchangeError(OAuth2Error):
    """The code could not be exchanged (PocketBase answers 400 "Failed to fetch OAuth2 token.").

    ``status`` is the token endpoint's HTTP status (0 without an answer), ``error`` and
    ``description`` its ``error``/``error_description`` when it sent them."""

    def __init__(
        self, message: str, *, status: int = 0, error: str = "", description: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.description = description


class UserInfoError(OAuth2Error):
    """The user could not be read (PocketBase answers 400 "Failed to fetch OAuth2 user.")."""


@dataclass(frozen=True)
class FieldSpec:
    """Where one value sits in a user-info document: a path of object keys and array indexes,
    and the Go type PocketBase decodes it into (a JSON value of another type is an error, a
    missing or null one is the type's zero value)."""

    path: tuple[str | int, ...]
    kind: FieldKind = "string"


@dataclass(frozen=True)
class UserInfoRequest:
    """How the user is read. ``source`` names a function of quirks.RAW_SOURCES: ``userinfo``
    (an HTTP request to the user-info URL: ``method``, ``headers`` where ``{clientId}`` is the
    client id, ``body``), ``oidc`` (that, or the id_token's claims when there is no user-info
    URL), ``apple_id_token`` (the verified id_token's claims)."""

    source: str = "userinfo"
    method: str = "GET"
    headers: Mapping[str, str] = field(default_factory=dict)
    body: str = ""


@dataclass(frozen=True)
class ProviderSpec:
    """A provider as PocketBase ships it (its ``New*Provider`` defaults) plus how its user-info
    document maps to an `AuthUser`: ``fields`` named ``id``, ``name``, ``username``, ``email``
    or ``avatarURL`` are copied into the user (an ``int`` as its decimal string), the others
    feed ``email_verified_by`` (the field whose truth keeps ``email``) and the ``quirks``
    (names of functions in quirks.QUIRKS, run in order after the copy)."""

    name: str
    display_name: str
    order: int
    pkce: bool
    scopes: tuple[str, ...]
    auth_url: str
    token_url: str
    user_info_url: str
    user_info: UserInfoRequest
    fields: Mapping[str, FieldSpec]
    logo: str = ""
    jwks_url: str = ""
    auth_params: Mapping[str, str] = field(default_factory=dict)
    email_verified_by: str = ""
    quirks: tuple[str, ...] = ()
    configure: str = ""


@dataclass(frozen=True)
class ProviderConfig:
    """One entry of an auth collection's ``oauth2.providers`` (PocketBase's
    ``OAuth2ProviderConfig``); empty strings and None mean "the provider's default"."""

    name: str
    client_id: str = ""
    client_secret: str = ""
    auth_url: str = ""
    token_url: str = ""
    user_info_url: str = ""
    display_name: str = ""
    pkce: bool | None = None
    extra: Mapping[str, Any] | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ProviderConfig:
        """From the collection JSON's keys (``name, clientId, clientSecret, authURL, tokenURL,
        userInfoURL, displayName, pkce, extra``); unknown keys are ignored."""
        pkce = data.get("pkce")
        extra = data.get("extra")
        return cls(
            name=str(data.get("name") or ""),
            client_id=str(data.get("clientId") or ""),
            client_secret=str(data.get("clientSecret") or ""),
            auth_url=str(data.get("authURL") or ""),
            token_url=str(data.get("tokenURL") or ""),
            user_info_url=str(data.get("userInfoURL") or ""),
            display_name=str(data.get("displayName") or ""),
            pkce=pkce if isinstance(pkce, bool) else None,
            extra=dict(extra) if isinstance(extra, Mapping) else None,
        )


@dataclass(frozen=True)
class ResolvedProvider:
    """A spec with a config applied: what the client uses for one login."""

    spec: ProviderSpec
    name: str
    display_name: str
    client_id: str
    client_secret: str
    auth_url: str
    token_url: str
    user_info_url: str
    scopes: tuple[str, ...]
    pkce: bool
    extra: Mapping[str, Any]


@dataclass(frozen=True)
class Token:
    """A token endpoint's successful answer. ``raw`` is the decoded JSON object, or for a
    form-encoded answer the parsed form (``form=True``, every value a list of strings)."""

    access_token: str
    token_type: str = ""
    refresh_token: str = ""
    expiry: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)
    form: bool = False

    def extra(self, key: str) -> Any:
        """x/oauth2's ``Token.Extra``: a JSON member as decoded (None when absent); for a form
        answer the first value ("" when absent), as an int or a float when it reads as one."""
        if not self.form:
            return self.raw.get(key)
        values = self.raw.get(key) or [""]
        value = str(values[0])
        text = value.strip()
        dots = text.count(".")
        try:
            if "_" in text:  # Go's number syntax has no separators
                raise ValueError(text)
            if dots == 0:
                return int(text, 10)
            if dots == 1:
                return float(text)
        except ValueError:
            pass
        return value

    def authorization(self) -> str:
        """The ``Authorization`` header x/oauth2 sends with this token."""
        kind = self.token_type
        lowered = kind.lower()
        if lowered == "bearer" or not kind:
            kind = "Bearer"
        elif lowered == "mac":
            kind = "MAC"
        elif lowered == "basic":
            kind = "Basic"
        return f"{kind} {self.access_token}"


def format_datetime(value: datetime | None) -> str:
    """PocketBase's ``types.DateTime`` text: ``2006-01-02 15:04:05.000Z`` in UTC, "" for none."""
    if value is None:
        return ""
    utc = value.astimezone(UTC)
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


@dataclass
class AuthUser:
    """The OAuth2 user, normalised (PocketBase's ``auth.AuthUser``)."""

    id: str = ""
    name: str = ""
    username: str = ""
    email: str = ""
    avatar_url: str = ""
    access_token: str = ""
    refresh_token: str = ""
    expiry: datetime | None = None
    raw_user: dict[str, Any] = field(default_factory=dict)

    def to_meta(self) -> dict[str, Any]:
        """The JSON PocketBase marshals for it (``avatarUrl`` is its legacy copy)."""
        return {
            "expiry": format_datetime(self.expiry),
            "rawUser": self.raw_user,
            "id": self.id,
            "name": self.name,
            "username": self.username,
            "avatarURL": self.avatar_url,
            "accessToken": self.access_token,
            "refreshToken": self.refresh_token,
            "email": self.email,
            "avatarUrl": self.avatar_url,
        }
