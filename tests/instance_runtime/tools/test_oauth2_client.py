"""Our OAuth2 client against a real OpenID Connect provider on loopback (panva's
``oidc-provider``, tests/support/oidc.py), through the generic ``oidc`` provider as PocketBase
configures it: a full code exchange with PKCE, and what the provider refuses (a wrong
verifier, a reused code, a denied consent); the email of an unverified address is dropped;
the id_token path; and the guarded avatar download refusing loopback and private addresses.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from instance_runtime.tools.oauth2 import (
    AuthUser,
    DisallowedAddressError,
    SafeFetchError,
    TokenExchangeError,
    UserInfoError,
    auth_method_info,
    fetch_auth_user,
    is_public_address,
    safe_fetch,
)
from tests.support.oidc import OidcProvider, authorize_url

REDIRECT = "http://127.0.0.1:8090/api/oauth2-redirect"  # any loopback port is registered
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


def login(idp: OidcProvider, config: dict[str, Any]) -> tuple[dict[str, str], str]:
    """auth-methods' entry for ``config`` and the code of a completed login."""
    info = auth_method_info("oidc", config)
    result = idp.authorize(authorize_url(info, REDIRECT))
    assert result.redirect_url == REDIRECT
    return info, result.require_code(info["state"])


def grant_errors(idp: OidcProvider) -> list[str]:
    return [str(event.get("detail")) for event in idp.events("grant.error")]


async def test_code_exchange_with_pkce_gives_the_user(idp: OidcProvider) -> None:
    config = idp.pocketbase_provider()
    info, code = login(idp, config)
    assert info["codeChallengeMethod"] == "S256" and len(info["codeVerifier"]) == 43
    assert info["authURL"].startswith(idp.endpoint("authorization_endpoint") + "?")
    assert info["authURL"].endswith("&redirect_uri=")

    user = await fetch_auth_user("oidc", config, code, info["codeVerifier"], REDIRECT)
    assert isinstance(user, AuthUser)
    assert (user.id, user.name, user.username, user.email, user.avatar_url) == (
        "oidc-user-1",
        "Alice Example",
        "alice",
        "alice@example.com",
        idp.claims["picture"],
    )
    assert user.raw_user == idp.claims  # the user-info answer as it came
    assert user.access_token and user.refresh_token == ""
    assert user.expiry is not None
    remaining = user.expiry - datetime.now(UTC)
    assert timedelta(minutes=59) < remaining <= timedelta(hours=1)
    meta = user.to_meta()
    assert meta["avatarURL"] == meta["avatarUrl"] == idp.claims["picture"]
    assert meta["expiry"].endswith("Z") and len(meta["expiry"]) == len("2006-01-02 15:04:05.000Z")


async def test_a_wrong_pkce_verifier_is_refused_after_one_retry(idp: OidcProvider) -> None:
    config = idp.pocketbase_provider()
    _, code = login(idp, config)
    before = len(grant_errors(idp))
    with pytest.raises(TokenExchangeError) as refused:
        await fetch_auth_user("oidc", config, code, "x" * 43, REDIRECT)
    assert (refused.value.status, refused.value.error) == (400, "invalid_grant")
    # PocketBase's x/oauth2 sends the exchange again with the secret in the body: two refusals
    assert grant_errors(idp)[before:] == ["code_verifier does not match code_challenge"] * 2


async def test_a_reused_code_is_refused(idp: OidcProvider) -> None:
    config = idp.pocketbase_provider()
    info, code = login(idp, config)
    first = await fetch_auth_user("oidc", config, code, info["codeVerifier"], REDIRECT)
    assert first.email == "alice@example.com"
    with pytest.raises(TokenExchangeError) as refused:
        await fetch_auth_user("oidc", config, code, info["codeVerifier"], REDIRECT)
    assert refused.value.error == "invalid_grant"
    assert "authorization code already consumed" in grant_errors(idp)


async def test_a_denied_consent_leaves_no_code_to_exchange(idp: OidcProvider) -> None:
    config = idp.pocketbase_provider()
    info = auth_method_info("oidc", config)
    denied = idp.authorize(authorize_url(info, REDIRECT), consent=False)
    assert (denied.error, denied.code, denied.state) == ("access_denied", None, info["state"])
    with pytest.raises(TokenExchangeError):
        await fetch_auth_user("oidc", config, denied.code or "", info["codeVerifier"], REDIRECT)


async def test_an_unverified_email_is_dropped() -> None:
    with OidcProvider(claims={"email": "bob@example.com", "email_verified": False}) as idp:
        config = idp.pocketbase_provider("oidc2")
        info, code = login(idp, config)
        user = await fetch_auth_user("oidc2", config, code, info["codeVerifier"], REDIRECT)
    assert (user.id, user.email) == ("oidc-user-1", "")
    assert user.raw_user["email"] == "bob@example.com"  # kept in rawUser, not as the email


async def test_without_a_userinfo_url_the_signed_id_token_is_read(idp: OidcProvider) -> None:
    extra = {"jwksURL": idp.endpoint("jwks_uri"), "issuers": [idp.issuer]}
    config = idp.pocketbase_provider("oidc3", userInfoURL="", extra=extra)
    info, code = login(idp, config)
    user = await fetch_auth_user("oidc3", config, code, info["codeVerifier"], REDIRECT)
    assert user.id == "oidc-user-1"
    assert user.raw_user["iss"] == idp.issuer and user.raw_user["aud"] == idp.client_id

    other_issuer = {**config, "extra": {**extra, "issuers": ["https://elsewhere.example"]}}
    info, code = login(idp, other_issuer)
    with pytest.raises(UserInfoError, match="iss must be one of"):
        await fetch_auth_user("oidc3", other_issuer, code, info["codeVerifier"], REDIRECT)


# --- the avatar download ----------------------------------------------------------------------


async def test_the_safe_client_refuses_a_loopback_avatar(idp: OidcProvider) -> None:
    avatar = str(idp.claims["picture"])
    assert avatar.startswith("http://127.0.0.1:")
    with pytest.raises(DisallowedAddressError, match="disallowed IP"):
        await safe_fetch(avatar)
    by_name = avatar.replace("127.0.0.1", "localhost")  # refused after name resolution too
    with pytest.raises(DisallowedAddressError):
        await safe_fetch(by_name)
    # the same URL is served once loopback is allowed: the address rule is what refused
    fetched = await safe_fetch(avatar, address_allowed=lambda address: True)
    assert fetched.content.startswith(PNG_SIGNATURE) and fetched.name == "avatar.png"
    assert fetched.content_type == "image/png" and not fetched.truncated
    cut = await safe_fetch(avatar, 10, address_allowed=lambda address: True)
    assert (cut.content, cut.truncated) == (fetched.content[:10], True)
    with pytest.raises(SafeFetchError, match=r"\(404\)"):
        await safe_fetch(avatar + "-missing", address_allowed=lambda address: True)


class _Redirect(BaseHTTPRequestHandler):
    location = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("location", self.location)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_the_safe_client_checks_every_redirect(idp: OidcProvider) -> None:
    """A host it may reach (127.0.0.2 here) redirecting to one it may not (127.0.0.1)."""
    handler = type("Redirect", (_Redirect,), {"location": str(idp.claims["picture"])})
    server = ThreadingHTTPServer(("127.0.0.2", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.2:{server.server_address[1]}/me.png"
        only_second = ipaddress.ip_address("127.0.0.2")
        with pytest.raises(DisallowedAddressError):
            await safe_fetch(url, address_allowed=lambda address: address == only_second)
        fetched = await safe_fetch(url, address_allowed=lambda address: True)
        assert fetched.content.startswith(PNG_SIGNATURE)
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("127.8.9.10", False),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("172.31.255.255", False),
        ("172.32.0.1", True),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # cloud metadata (link-local)
        ("224.0.0.251", False),
        ("239.1.2.3", False),
        ("100.64.0.1", True),  # Go's IsPrivate is RFC 1918 and fc00::/7 only
        ("8.8.8.8", True),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fd12:3456::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:10.0.0.1", False),
        ("::ffff:8.8.8.8", True),
        ("2001:4860:4860::8888", True),
    ],
)
def test_public_addresses_are_go_s(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public
