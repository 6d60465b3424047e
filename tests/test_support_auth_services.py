"""Self-checks of tests/support/smtp.py and tests/support/oidc.py against the real PocketBase
0.40.6: its mail reaches our SMTP server and the tokens and codes read from the messages work;
its generic OIDC provider logs in through our OpenID Connect provider, and a reused code, a
denied consent and a wrong ``state`` are refused. What PocketBase answers here is what our
runtime must answer (issue 15); the bodies are asserted whole where they are stable.
"""

from __future__ import annotations

import json
import queue
import smtplib
import threading
from collections.abc import Iterator
from email.message import EmailMessage
from types import TracebackType
from typing import Any

import httpx
import pytest

from tests.support.engines import EngineProcess, start_engine
from tests.support.oidc import (
    AuthorizationResult,
    OidcFlowError,
    OidcProvider,
    StateMismatch,
    authorize_url,
)
from tests.support.smtp import (
    SmtpServer,
    otp_code,
    pocketbase_link,
    pocketbase_token,
    token_from_link,
)

SUPERUSER = ("root@example.com", "root-pass-12345")
USERS = "/api/collections/users"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def pocketbase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    engine = start_engine("pocketbase", tmp_path_factory.mktemp("pb-auth"), *SUPERUSER)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def admin(pocketbase: EngineProcess) -> dict[str, str]:
    """The superuser's ``Authorization`` header."""
    identity, password = SUPERUSER
    login = httpx.post(
        f"{pocketbase.url}/api/collections/_superusers/auth-with-password",
        json={"identity": identity, "password": password},
        timeout=20,
    )
    assert login.status_code == 200, login.text
    return {"Authorization": login.json()["token"]}


@pytest.fixture(scope="module")
def pb(
    pocketbase: EngineProcess, admin: dict[str, str], smtp: SmtpServer, idp: OidcProvider
) -> Iterator[httpx.Client]:
    """A client of the PocketBase above, whose mail goes to ``smtp`` and whose ``users``
    collection has OTP and OAuth2 (``idp`` as the generic ``oidc`` provider) enabled."""
    with httpx.Client(base_url=pocketbase.url, timeout=20) as client:
        settings = client.patch("/api/settings", json=smtp.pocketbase_settings(), headers=admin)
        assert settings.status_code == 200, settings.text
        assert settings.json()["smtp"] == {
            "enabled": True,
            "host": "127.0.0.1",
            "port": smtp.port,
            "username": "",
            "authMethod": "",
            "tls": False,
            "localName": "",
        }
        users = client.patch(
            USERS,
            json={
                "otp": {"enabled": True},
                "oauth2": {"enabled": True, "providers": [idp.pocketbase_provider()]},
            },
            headers=admin,
        )
        assert users.status_code == 200, users.text
        yield client


def create_user(client: httpx.Client, email: str, password: str = "user-pass-12345") -> str:
    created = client.post(
        f"{USERS}/records",
        json={"email": email, "password": password, "passwordConfirm": password},
    )
    assert created.status_code == 200, created.text
    user_id: str = created.json()["id"]
    return user_id


# --- the SMTP server by itself ---------------------------------------------------------------


def test_smtp_server_parses_what_it_receives(smtp: SmtpServer) -> None:
    message = EmailMessage()
    message["From"] = "Sender Name <Sender@Example.com>"
    message["To"] = "Bob <BOB@example.com>"
    message["Subject"] = "Héllo from the test"
    message.set_content("see https://example.com/x?y=1 now")
    message.add_alternative('<p><a href="https://example.com/a?b=1&amp;c=2">go</a></p>', "html")
    with smtplib.SMTP(smtp.host, smtp.port, timeout=10) as client:
        client.send_message(message, from_addr="bounce@example.com", to_addrs=["bob@example.com"])
    mail = smtp.wait_for(to="bob@EXAMPLE.com", subject_contains="Héllo")
    assert mail.sender == "sender@example.com" and mail.sender_name == "Sender Name"
    assert mail.to == ("bob@example.com",)
    assert mail.envelope_from == "bounce@example.com"
    assert mail.envelope_to == ("bob@example.com",)
    assert mail.subject == "Héllo from the test"
    assert mail.text.strip() == "see https://example.com/x?y=1 now"
    assert "<a href=" in mail.html
    assert mail.links() == ["https://example.com/a?b=1&c=2", "https://example.com/x?y=1"]
    assert mail in smtp.messages


def test_wait_for_refuses_when_no_message_matches(smtp: SmtpServer) -> None:
    with pytest.raises(TimeoutError, match=r"nobody@example\.com"):
        smtp.wait_for(to="nobody@example.com", timeout=0.2)


def test_token_helpers_refuse_what_is_not_a_pocketbase_link() -> None:
    link = "http://localhost:8090/_/#/auth/confirm-verification/aaa.bbb.ccc"
    assert token_from_link(link, "confirm-verification") == "aaa.bbb.ccc"
    with pytest.raises(ValueError, match="not a confirm-password-reset link"):
        token_from_link(link, "confirm-password-reset")
    with pytest.raises(ValueError, match="not a confirm-verification link"):
        token_from_link(
            "http://localhost:8090/_/#/auth/confirm-verification/", "confirm-verification"
        )


# --- PocketBase's mail ---------------------------------------------------------------------


def test_verification_mail_carries_a_token_that_verifies_the_user(
    pb: httpx.Client, smtp: SmtpServer, admin: dict[str, str]
) -> None:
    user_id = create_user(pb, "Verify.Me@example.com")
    # no account enumeration: an unknown address is answered the same, and gets no mail; nor
    # does the user's address in another case (PocketBase's email lookups are case-sensitive)
    for unknown in ("ghost@example.com", "verify.me@example.com"):
        refused = pb.post(f"{USERS}/request-verification", json={"email": unknown})
        assert (refused.status_code, refused.text) == (204, "")
    requested = pb.post(f"{USERS}/request-verification", json={"email": "Verify.Me@example.com"})
    assert (requested.status_code, requested.text) == (204, "")

    mail = smtp.wait_for(to="verify.me@example.com", subject_contains="Verify your")
    assert mail.message["To"] == "Verify.Me@example.com"  # as stored
    assert mail.subject == "Verify your Acme email"  # settings.meta.appName is "Acme"
    assert (mail.sender_name, mail.sender) == ("Support", "support@example.com")
    assert mail.message.get_content_type() == "multipart/mixed"
    link = pocketbase_link(mail, "confirm-verification")
    assert link.startswith("http://localhost:8090/_/#/auth/confirm-verification/")  # meta.appURL
    assert f"[Verify]({link})" in mail.text  # the text part PocketBase derives from the HTML
    received = [m.to for m in smtp.messages if m.subject.startswith("Verify")]
    assert received == [("verify.me@example.com",)]

    token = pocketbase_token(mail, "confirm-verification")
    confirmed = pb.post(f"{USERS}/confirm-verification", json={"token": token})
    assert (confirmed.status_code, confirmed.text) == (204, "")
    record = pb.get(f"{USERS}/records/{user_id}", headers=admin).json()
    assert record["verified"] is True
    # the same token again: still 204 (nothing left to do)
    assert pb.post(f"{USERS}/confirm-verification", json={"token": token}).status_code == 204


def test_confirm_verification_refuses_a_bad_token(pb: httpx.Client) -> None:
    refused = pb.post(f"{USERS}/confirm-verification", json={"token": "not.a.token"})
    assert refused.status_code == 400
    assert refused.json() == {
        "data": {
            "token": {
                "code": "validation_invalid_token_claims",
                "message": "Missing email token claim.",
            }
        },
        "message": "An error occurred while validating the submitted data.",
        "status": 400,
    }


def test_password_reset_mail_carries_a_token_that_works_once(
    pb: httpx.Client, smtp: SmtpServer
) -> None:
    create_user(pb, "reset.me@example.com", "old-pass-12345")
    assert (
        pb.post(
            f"{USERS}/request-password-reset", json={"email": "reset.me@example.com"}
        ).status_code
        == 204
    )
    mail = smtp.wait_for(to="reset.me@example.com", subject_contains="Reset your")
    assert mail.subject == "Reset your Acme password"
    token = pocketbase_token(mail, "confirm-password-reset")

    body = {"token": token, "password": "new-pass-12345", "passwordConfirm": "new-pass-12345"}
    confirmed = pb.post(f"{USERS}/confirm-password-reset", json=body)
    assert (confirmed.status_code, confirmed.text) == (204, "")
    login = {"identity": "reset.me@example.com", "password": "new-pass-12345"}
    assert pb.post(f"{USERS}/auth-with-password", json=login).status_code == 200
    old = pb.post(f"{USERS}/auth-with-password", json={**login, "password": "old-pass-12345"})
    assert (old.status_code, old.json()) == (
        400,
        {"data": {}, "message": "Failed to authenticate.", "status": 400},
    )

    reused = pb.post(
        f"{USERS}/confirm-password-reset",
        json={**body, "password": "other-pass-123", "passwordConfirm": "other-pass-123"},
    )
    assert reused.status_code == 400
    assert reused.json() == {
        "data": {
            "token": {"code": "validation_invalid_token", "message": "Invalid or expired token."}
        },
        "message": "An error occurred while validating the submitted data.",
        "status": 400,
    }


def test_otp_mail_carries_the_code_that_logs_in(pb: httpx.Client, smtp: SmtpServer) -> None:
    create_user(pb, "otp.user@example.com")
    requested = pb.post(f"{USERS}/request-otp", json={"email": "otp.user@example.com"})
    assert requested.status_code == 200, requested.text
    otp_id = requested.json()["otpId"]
    mail = smtp.wait_for(to="otp.user@example.com", subject_contains="OTP for")
    code = otp_code(mail)
    assert len(code) == 8 and code.isdigit()  # otp.length 8, digits only
    assert f"Your one-time password is: {code}" in mail.text

    wrong = "0" * 8 if code != "0" * 8 else "1" * 8
    refused = pb.post(f"{USERS}/auth-with-otp", json={"otpId": otp_id, "password": wrong})
    assert (refused.status_code, refused.json()) == (
        400,
        {"data": {}, "message": "Invalid or expired OTP.", "status": 400},
    )
    accepted = pb.post(f"{USERS}/auth-with-otp", json={"otpId": otp_id, "password": code})
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["record"]["email"] == "otp.user@example.com"


# --- OAuth2 through PocketBase's generic OIDC provider ---------------------------------------


def oidc_info(pb: httpx.Client) -> dict[str, Any]:
    methods = pb.get(f"{USERS}/auth-methods")
    assert methods.status_code == 200, methods.text
    oauth2 = methods.json()["oauth2"]
    assert oauth2["enabled"] is True
    (info,) = oauth2["providers"]
    assert isinstance(info, dict)
    return info


def redirect_url(pb: httpx.Client) -> str:
    return f"{pb.base_url}".rstrip("/") + "/api/oauth2-redirect"


def exchange(pb: httpx.Client, info: dict[str, Any], code: str, redirect: str) -> httpx.Response:
    body = {
        "provider": info["name"],
        "code": code,
        "codeVerifier": info["codeVerifier"],
        "redirectURL": redirect,
    }
    return pb.post(f"{USERS}/auth-with-oauth2", json=body)


FAILED_TOKEN = {"data": {}, "message": "Failed to fetch OAuth2 token.", "status": 400}


def test_oauth2_login_creates_the_user_once_and_refuses_a_reused_code(
    pb: httpx.Client, idp: OidcProvider
) -> None:
    info = oidc_info(pb)
    assert (info["name"], info["displayName"], info["codeChallengeMethod"]) == (
        "oidc",
        "Test OIDC",
        "S256",
    )
    assert info["authURL"].startswith(idp.endpoint("authorization_endpoint") + "?")
    assert info["authURL"].endswith("&redirect_uri=")  # the client appends its redirect URL
    redirect = redirect_url(pb)
    result = idp.authorize(authorize_url(info, redirect))
    assert result.redirect_url == redirect and result.params["iss"] == idp.issuer
    code = result.require_code(info["state"])

    first = exchange(pb, info, code, redirect)
    assert first.status_code == 200, first.text
    answer = first.json()
    record = answer["record"]
    assert record["email"] == "alice@example.com" and record["verified"] is True
    assert record["name"] == "Alice Example"  # oauth2.mappedFields.name
    # mappedFields.avatarURL is "avatar", but PocketBase refuses to download from a loopback
    # address (safeHTTPClient), so the record has no avatar; meta keeps the URL
    assert record["avatar"] == ""
    meta = answer["meta"]
    assert meta["isNew"] is True and meta["id"] == "oidc-user-1"
    assert meta["avatarURL"] == idp.claims["picture"] and meta["username"] == "alice"
    assert meta["rawUser"] == idp.claims

    reused = exchange(pb, info, code, redirect)
    assert (reused.status_code, reused.json()) == (400, FAILED_TOKEN)
    details = [event.get("detail") for event in idp.events("grant.error")]
    assert "authorization code already consumed" in details

    again = idp.authorize(authorize_url(info, redirect))  # a new login links the same user
    second = exchange(pb, info, again.require_code(info["state"]), redirect)
    assert second.status_code == 200, second.text
    assert second.json()["meta"]["isNew"] is False
    assert second.json()["record"]["id"] == record["id"]


def test_oauth2_refuses_a_code_without_its_pkce_verifier(
    pb: httpx.Client, idp: OidcProvider
) -> None:
    info = oidc_info(pb)
    redirect = redirect_url(pb)
    code = idp.authorize(authorize_url(info, redirect)).require_code(info["state"])
    refused = exchange(pb, {**info, "codeVerifier": "x" * 43}, code, redirect)
    assert (refused.status_code, refused.json()) == (400, FAILED_TOKEN)
    details = [event.get("detail") for event in idp.events("grant.error")]
    assert "code_verifier does not match code_challenge" in details


class Realtime:
    """PocketBase's realtime connection (server-sent events) as the JS SDK opens it for an
    OAuth2 login: connect, subscribe to ``@oauth2``, receive what ``/api/oauth2-redirect`` sends."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.client_id = ""
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(10, read=None))
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> Realtime:
        self._thread.start()
        self.client_id = self.next("PB_CONNECT")["clientId"]
        subscribed = self._client.post(
            "/api/realtime", json={"clientId": self.client_id, "subscriptions": ["@oauth2"]}
        )
        assert subscribed.status_code == 204, subscribed.text
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client.close()

    def _read(self) -> None:
        name, data = "", []
        try:
            with self._client.stream("GET", "/api/realtime") as response:
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        name = line.partition(":")[2].strip()
                    elif line.startswith("data:"):
                        data.append(line.partition(":")[2].strip())
                    elif not line and name:
                        self._events.put((name, json.loads("\n".join(data))))
                        name, data = "", []
        except (httpx.HTTPError, RuntimeError, OSError):
            pass  # closed by __exit__

    def next(self, name: str, timeout: float = 10) -> Any:
        event, data = self._events.get(timeout=timeout)
        assert event == name, (event, data)
        return data


def deliver(pb: httpx.Client, redirect: str) -> httpx.Response:
    """What the browser does with the provider's redirect: load it (PocketBase's page)."""
    return pb.get(redirect, follow_redirects=False)


def with_state(result: AuthorizationResult, state: str) -> str:
    params = {**result.params, "state": state}
    return f"{result.redirect_url}?{httpx.QueryParams(params)}"


def test_oauth2_redirect_refuses_a_wrong_state(
    pb: httpx.Client, pocketbase: EngineProcess, idp: OidcProvider
) -> None:
    info = oidc_info(pb)
    redirect = redirect_url(pb)
    with Realtime(pocketbase.url) as realtime:
        # the SDK's popup flow: state is the realtime client id
        result = idp.authorize(authorize_url(info, redirect, state=realtime.client_id))
        with pytest.raises(StateMismatch):
            result.require_code(info["state"])  # the client's own check
        code = result.require_code(realtime.client_id)

        wrong = deliver(pb, with_state(result, "not-a-realtime-client"))
        assert (wrong.status_code, wrong.headers["location"]) == (
            307,
            "../_/#/auth/oauth2-redirect-failure",
        )
        right = deliver(pb, result.redirect)
        assert (right.status_code, right.headers["location"]) == (
            307,
            "../_/#/auth/oauth2-redirect-success",
        )
        # the wrong state reached nobody: the first message is the genuine redirect's
        assert realtime.next("@oauth2") == {"state": realtime.client_id, "code": code}
    logged_in = exchange(pb, info, code, redirect)
    assert logged_in.status_code == 200, logged_in.text
    assert logged_in.json()["record"]["email"] == "alice@example.com"


def test_oauth2_refuses_a_denied_consent(
    pb: httpx.Client, pocketbase: EngineProcess, idp: OidcProvider
) -> None:
    info = oidc_info(pb)
    redirect = redirect_url(pb)
    with Realtime(pocketbase.url) as realtime:
        url = authorize_url(info, redirect, state=realtime.client_id)
        denied = idp.authorize(url, consent=False)
        assert (denied.error, denied.error_description, denied.code) == (
            "access_denied",
            "End-User aborted interaction",
            None,
        )
        assert denied.state == realtime.client_id
        with pytest.raises(OidcFlowError, match="access_denied"):
            denied.require_code(realtime.client_id)
        answer = deliver(pb, denied.redirect)
        assert (answer.status_code, answer.headers["location"]) == (
            307,
            "../_/#/auth/oauth2-redirect-failure",
        )
        assert realtime.next("@oauth2") == {
            "state": realtime.client_id,
            "code": "",
            "error": "access_denied",
        }
    no_code = exchange(pb, info, "", redirect)
    assert (no_code.status_code, no_code.json()) == (
        400,
        {
            "data": {"code": {"code": "validation_required", "message": "Cannot be blank."}},
            "message": "An error occurred while loading the submitted data.",
            "status": 400,
        },
    )


def test_oidc_driver_refuses_a_wrong_password(pb: httpx.Client, idp: OidcProvider) -> None:
    url = authorize_url(oidc_info(pb), redirect_url(pb))
    with pytest.raises(OidcFlowError, match="refused the login"):
        idp.authorize(url, password="wrong-password")


def test_oidc_provider_refuses_an_unregistered_redirect_uri(
    pb: httpx.Client, idp: OidcProvider
) -> None:
    url = authorize_url(oidc_info(pb), "http://127.0.0.1:9/elsewhere")
    with pytest.raises(OidcFlowError, match="answered 400"):
        idp.authorize(url)


def test_oidc_provider_stops_with_its_context() -> None:
    with OidcProvider(claims={"email": "x@example.com"}) as provider:
        assert provider.discovery["issuer"] == provider.issuer
        assert provider.pocketbase_provider("oidc2")["name"] == "oidc2"
        process = provider.process
        assert process is not None
    assert process.poll() is not None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{provider.issuer}/.well-known/openid-configuration", timeout=2)
