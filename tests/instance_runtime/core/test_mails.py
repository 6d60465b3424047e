"""instance_runtime/core/mails.py: auth e-mails rendered as PocketBase 0.40.6 renders them
(compared whole with the mail the real PocketBase sends for the same record and template), and
the background mailer against the real SMTP server of tests/support/smtp.py: queued, retried,
logged, never in the caller's way."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from instance_runtime.core.mails import (
    AUTH_EMAIL_KINDS,
    DEFAULT_TEMPLATES,
    LAYOUT,
    Mailer,
    MailerDisabledError,
    default_template_options,
    email_template,
    render_auth_email,
)
from instance_runtime.core.models import Collection
from instance_runtime.core.system_collections import AUTH_DEFAULTS, SYSTEM_COLLECTIONS
from instance_runtime.tools.mailer import MailerError, Message, html_to_text
from tests.support.engines import EngineProcess, start_engine
from tests.support.ports import free_port
from tests.support.smtp import ReceivedMail, SmtpServer, otp_code, pocketbase_token

LOGGER = "instance_runtime.mail"
META = {
    "appName": "Acme",
    "appURL": "http://localhost:8090",
    "senderName": "Support",
    "senderAddress": "support@example.com",
}
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJpZCI6InUxIn0.c2lnbmF0dXJl"
ANN: dict[str, Any] = {
    "id": "ann000000000001",
    "email": "Ann@Example.com",
    "emailVisibility": False,
    "verified": False,
    "name": "Ann",
    "avatar": "",
    "password": "$2a$10$hash",
    "tokenKey": "secret-token-key",
    "created": "2024-01-02 03:04:05.678Z",
    "updated": "2024-01-02 03:04:05.678Z",
}


def users() -> Collection:
    (data,) = [c for c in SYSTEM_COLLECTIONS if c["name"] == "users"]
    return Collection.from_json(data)


def settings_for(smtp: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"meta": dict(META), "smtp": smtp or {"enabled": False}}


def lf(text: str) -> str:
    return text.replace("\r\n", "\n")


def a_message(to: str = "ann@example.com", subject: str = "Hello") -> Message:
    return Message(
        from_address="support@example.com",
        from_name="Support",
        to=[(to, "")],
        subject=subject,
        html=f"<p>{subject}</p>",
    )


# --- templates and rendering ------------------------------------------------------------------


def test_default_templates_are_pocketbases() -> None:
    # AUTH_DEFAULTS was captured from a real PocketBase 0.40.6 (a new auth collection's options)
    options = default_template_options()
    assert options == {
        "verificationTemplate": AUTH_DEFAULTS["verificationTemplate"],
        "resetPasswordTemplate": AUTH_DEFAULTS["resetPasswordTemplate"],
        "confirmEmailChangeTemplate": AUTH_DEFAULTS["confirmEmailChangeTemplate"],
        "otp": {"emailTemplate": AUTH_DEFAULTS["otp"]["emailTemplate"]},
        "authAlert": {"emailTemplate": AUTH_DEFAULTS["authAlert"]["emailTemplate"]},
    }
    assert set(DEFAULT_TEMPLATES) == set(AUTH_EMAIL_KINDS)
    options["otp"]["emailTemplate"]["subject"] = "changed"  # a fresh copy each time
    assert DEFAULT_TEMPLATES["otp"]["subject"] == "OTP for {APP_NAME}"
    assert LAYOUT.count("{{content}}") == 1


def test_the_collections_template_wins_over_the_default() -> None:
    coll = users()
    coll.options["verificationTemplate"] = {"subject": "Hi {APP_NAME}", "body": "<p>{TOKEN}</p>"}
    coll.options["otp"] = {"enabled": True}  # no template: PocketBase's default
    assert email_template(coll, "verification") == {
        "subject": "Hi {APP_NAME}",
        "body": "<p>{TOKEN}</p>",
    }
    assert email_template(coll, "otp") == DEFAULT_TEMPLATES["otp"]
    with pytest.raises(ValueError, match="unknown auth e-mail kind"):
        email_template(coll, "welcome")


def test_verification_mail_is_rendered_with_its_link() -> None:
    mail = render_auth_email("verification", settings_for(), users(), ANN, token=TOKEN)
    assert (mail.from_address, mail.from_name) == ("support@example.com", "Support")
    assert mail.to == [("Ann@Example.com", "")]  # as stored
    assert mail.subject == "Verify your Acme email"
    assert mail.text == ""  # the mailer derives it
    link = f"http://localhost:8090/_/#/auth/confirm-verification/{TOKEN}"
    assert f'href="{link}"' in mail.html
    assert mail.html.startswith("\n<!DOCTYPE html")
    assert "<p>Thank you for joining us at Acme.</p>" in mail.html
    text = html_to_text(mail.html)
    assert f"[Verify]({link})" in text
    assert text.startswith("Hello, \r\nThank you for joining us at Acme.")


def test_each_kind_has_its_subject_recipient_and_placeholders() -> None:
    coll, settings = users(), settings_for()
    reset = render_auth_email("resetPassword", settings, coll, ANN, token=TOKEN)
    assert reset.subject == "Reset your Acme password"
    assert f"/_/#/auth/confirm-password-reset/{TOKEN}" in reset.html
    change = render_auth_email(
        "confirmEmailChange", settings, coll, ANN, token=TOKEN, new_email="ann.new@example.com"
    )
    assert change.subject == "Confirm your Acme new email address"
    assert change.to == [("ann.new@example.com", "")]  # the NEW address, as PocketBase
    assert f"/_/#/auth/confirm-email-change/{TOKEN}" in change.html
    otp = render_auth_email("otp", settings, coll, ANN, otp="12345678", otp_id="otp1")
    assert otp.subject == "OTP for Acme"
    assert "Your one-time password is: <strong>12345678</strong>" in otp.html
    alert = render_auth_email(
        "authAlert", settings, coll, ANN, alert_info="2024-01-02 - 10.0.0.1 <Firefox & 'co'>"
    )
    assert alert.subject == "Login from a new location"
    assert alert.to == [("Ann@Example.com", "")]
    assert "<em>2024-01-02 - 10.0.0.1 &lt;Firefox &amp; &#39;co&#39;&gt;</em>" in alert.html


def test_missing_inputs_are_refused() -> None:
    coll, settings = users(), settings_for()
    with pytest.raises(ValueError, match="needs a token"):
        render_auth_email("verification", settings, coll, ANN)
    with pytest.raises(ValueError, match="needs the one-time password"):
        render_auth_email("otp", settings, coll, ANN, otp_id="x")
    with pytest.raises(ValueError, match="needs the new address"):
        render_auth_email("confirmEmailChange", settings, coll, ANN, token=TOKEN)


def test_record_placeholders_are_escaped_as_pocketbase_escapes_them() -> None:
    coll = Collection.from_json(
        {
            **next(c for c in SYSTEM_COLLECTIONS if c["name"] == "users"),
            "fields": [
                *next(c for c in SYSTEM_COLLECTIONS if c["name"] == "users")["fields"],
                {"name": "score", "type": "number"},
                {"name": "meta", "type": "json"},
                {"name": "tags", "type": "select", "values": ["a", "b"], "maxSelect": 2},
                {"name": "secret", "type": "text", "hidden": True},
            ],
        }
    )
    coll.options["verificationTemplate"] = {
        "subject": "{RECORD:name} {APP_NAME}",
        "body": "{RECORD:name}|{RECORD:email}|{RECORD:verified}|{RECORD:score}|{RECORD:meta}|"
        "{RECORD:tags}|{RECORD:created}|{RECORD:password}|{RECORD:tokenKey}|{RECORD:secret}|"
        "{RECORD:nope}|{OTP}|{TOKEN}",
    }
    record = {
        **ANN,
        "name": "<b>\"Ann\" & 'Bo'</b> {TOKEN}",
        "score": 2.5,
        "meta": {"b": [1, 2.0], "a": "<x>"},
        "tags": ["a", "b"],
        "secret": "s3",
    }
    settings = {"meta": {**META, "appName": "Acme & <Co>"}}
    mail = render_auth_email("verification", settings, coll, record, token=TOKEN)
    escaped_name = "&lt;b&gt;&#34;Ann&#34; &amp; &#39;Bo&#39;&lt;/b&gt; {TOKEN}"  # one pass
    assert mail.subject == f"{escaped_name} Acme & <Co>"  # the app's name as it is
    body = mail.html.removeprefix(LAYOUT.split("{{content}}")[0])
    body = body.removesuffix(LAYOUT.split("{{content}}")[1])
    assert body.split("|") == [
        escaped_name,
        "Ann@Example.com",
        "false",
        "2.5",
        "{&#34;a&#34;:&#34;&lt;x&gt;&#34;,&#34;b&#34;:[1,2]}",
        "",  # a multi-value field has no string value
        "2024-01-02 03:04:05.678Z",
        "{RECORD:password}",  # hidden fields are never placeholders
        "{RECORD:tokenKey}",
        "{RECORD:secret}",
        "{RECORD:nope}",
        "{OTP}",  # not a placeholder of this kind
        TOKEN,
    ]


# --- the same mail as the real PocketBase ------------------------------------------------

SUPERUSER = ("root@example.com", "root-pass-12345")
FIELDS_BODY = (
    "<p>{RECORD:name}|{RECORD:score}|{RECORD:big}|{RECORD:tiny}|{RECORD:ok}|{RECORD:born}|"
    "{RECORD:meta}|{RECORD:tags}|{RECORD:tag}|{RECORD:where}|{RECORD:email}|{RECORD:password}|"
    "{RECORD:secret}|{RECORD:nope}|{RECORD:verified}|{RECORD:id}|{RECORD:rel}|{RECORD:created}</p>"
    '<p><a class="btn" href="{APP_URL}/_/#/auth/confirm-verification/{TOKEN}">Verify</a></p>'
    "<ul><li>one</li><li>two<br/>three</li></ul>"
)


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def pocketbase(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    engine = start_engine("pocketbase", tmp_path_factory.mktemp("pb-mails"), *SUPERUSER)
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def pb(
    pocketbase: EngineProcess, smtp: SmtpServer
) -> Iterator[tuple[httpx.Client, dict[str, str]]]:
    """A client of PocketBase, its superuser header; mail goes to ``smtp``, and ``members`` is
    an auth collection with fields of every kind, OTP on and a verification template that
    shows them all."""
    with httpx.Client(base_url=pocketbase.url, timeout=20) as client:
        login = client.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": SUPERUSER[0], "password": SUPERUSER[1]},
        )
        admin = {"Authorization": login.json()["token"]}
        meta = {"appName": 'Acme <&> "Co"', "appURL": "http://app.test"}
        patched = client.patch(
            "/api/settings", json={**smtp.pocketbase_settings(), "meta": meta}, headers=admin
        )
        assert patched.status_code == 200, patched.text
        members = {
            "name": "members",
            "type": "auth",
            "fields": [
                {"name": "name", "type": "text"},
                {"name": "score", "type": "number"},
                {"name": "big", "type": "number"},
                {"name": "tiny", "type": "number"},
                {"name": "ok", "type": "bool"},
                {"name": "born", "type": "date"},
                {"name": "meta", "type": "json"},
                {"name": "tags", "type": "select", "values": ["a", "b<"], "maxSelect": 2},
                {"name": "tag", "type": "select", "values": ["x&y", "z"], "maxSelect": 1},
                {"name": "where", "type": "geoPoint"},
                {"name": "secret", "type": "text", "hidden": True},
                {"name": "rel", "type": "relation", "collectionId": "_pb_users_auth_"},
                {"name": "created", "type": "autodate", "onCreate": True},
            ],
            "otp": {
                "enabled": True,
                "emailTemplate": {
                    "subject": "Code for {RECORD:name}",
                    "body": "<p>{OTP} ({OTP_ID}) for {RECORD:email}</p>",
                },
            },
            "verificationTemplate": {
                "subject": "Hi {RECORD:name} at {APP_NAME}",
                "body": FIELDS_BODY,
            },
        }
        created = client.post("/api/collections", json=members, headers=admin)
        assert created.status_code == 200, created.text
        yield client, admin


def compare_with_pocketbase(ours: Message, theirs: ReceivedMail) -> None:
    assert theirs.subject == ours.subject
    assert (theirs.sender, theirs.sender_name) == (ours.from_address, ours.from_name)
    assert theirs.message["To"] == ours.to[0][0]
    assert lf(theirs.html) == ours.html
    assert lf(theirs.text).strip() == lf(html_to_text(ours.html))


def test_rendered_mails_are_the_ones_pocketbase_sends(
    pb: tuple[httpx.Client, dict[str, str]], smtp: SmtpServer
) -> None:
    client, admin = pb
    password = "pass-123456789"
    values = {
        "email": "Ann.Member@Example.com",
        "password": password,
        "passwordConfirm": password,
        "name": "<b>\"Ann\" & 'Bo'</b>",
        "score": 1.5,
        "big": 1e21,
        "tiny": 0.0000001,
        "ok": True,
        "born": "2024-01-02 03:04:05.678Z",
        "meta": {"z": [1, 2.0, "<x>&"], "a": None, "u": "\u2028é"},
        "tags": ["a", "b<"],
        "tag": "x&y",
        "where": {"lat": 1.5, "lon": -2},
        "secret": "hidden!",
    }
    made = client.post("/api/collections/members/records", json=values, headers=admin)
    assert made.status_code == 200, made.text
    record = made.json()
    collection = Collection.from_json(client.get("/api/collections/members", headers=admin).json())
    settings = client.get("/api/settings", headers=admin).json()
    address = "ann.member@example.com"

    # verification: the collection's template, every kind of field as a placeholder
    sent = client.post(
        "/api/collections/members/request-verification", json={"email": values["email"]}
    )
    assert sent.status_code == 204
    theirs = smtp.wait_for(to=address, subject_contains="Hi ")
    token = pocketbase_token(theirs, "confirm-verification")
    ours = render_auth_email("verification", settings, collection, record, token=token)
    compare_with_pocketbase(ours, theirs)

    # password reset: PocketBase's default template
    sent = client.post(
        "/api/collections/members/request-password-reset", json={"email": values["email"]}
    )
    assert sent.status_code == 204
    theirs = smtp.wait_for(to=address, subject_contains="Reset your")
    token = pocketbase_token(theirs, "confirm-password-reset")
    compare_with_pocketbase(
        render_auth_email("resetPassword", settings, collection, record, token=token), theirs
    )

    # OTP: {OTP} and {OTP_ID}
    sent = client.post("/api/collections/members/request-otp", json={"email": values["email"]})
    assert sent.status_code == 200, sent.text
    otp_id = sent.json()["otpId"]
    theirs = smtp.wait_for(to=address, subject_contains="Code for")
    code = theirs.html.split("<p>", 2)[-1].split(" ", 1)[0]
    ours = render_auth_email("otp", settings, collection, record, otp=code, otp_id=otp_id)
    compare_with_pocketbase(ours, theirs)

    # email change: to the new address
    auth = client.post(
        "/api/collections/members/auth-with-password",
        json={"identity": values["email"], "password": password},
    )
    user = {"Authorization": auth.json()["token"]}
    new = "ann.moved@example.com"
    sent = client.post(
        "/api/collections/members/request-email-change", json={"newEmail": new}, headers=user
    )
    assert sent.status_code == 204, sent.text
    theirs = smtp.wait_for(to=new, subject_contains="Confirm your")
    token = pocketbase_token(theirs, "confirm-email-change")
    ours = render_auth_email(
        "confirmEmailChange", settings, collection, record, token=token, new_email=new
    )
    compare_with_pocketbase(ours, theirs)


# --- the mailer ---------------------------------------------------------------------------


@pytest.fixture
def records(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    return caplog


def mail_logs(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and (level is None or r.levelno == level)
    ]


def test_send_returns_before_the_mail_goes_out(smtp: SmtpServer) -> None:
    returned = threading.Event()
    seen: list[bool] = []

    def before_send(message: Message) -> Message:
        # runs in the worker: if send() did the work itself, this would wait here in vain
        seen.append(returned.wait(10))
        return message

    settings = settings_for(smtp.pocketbase_settings()["smtp"])
    mailer = Mailer(lambda: settings, before_send=before_send)
    try:
        mail = render_auth_email("verification", settings, users(), ANN, token=TOKEN)
        mailer.send(mail)
        returned.set()
        received = smtp.wait_for(to="ann@example.com", subject_contains="Verify your Acme")
    finally:
        assert mailer.close(10)
    assert seen == [True]
    assert pocketbase_token(received, "confirm-verification") == TOKEN
    assert "[Verify](http://localhost:8090/_/#/auth/confirm-verification/" in received.text


def test_before_send_can_replace_or_drop_a_message(
    smtp: SmtpServer, records: pytest.LogCaptureFixture
) -> None:
    def before_send(message: Message) -> Message | None:
        if "drop" in message.subject:
            return None
        message.subject += " (hooked)"
        return message

    settings = settings_for(smtp.pocketbase_settings()["smtp"])
    mailer = Mailer(lambda: settings, before_send=before_send)
    mailer.send(a_message("hook@example.com", "please drop"))
    mailer.send(a_message("hook@example.com", "keep"))
    assert mailer.close(10)
    assert smtp.wait_for(to="hook@example.com").subject == "keep (hooked)"
    assert [m.subject for m in smtp.messages if "hook@example.com" in m.to] == ["keep (hooked)"]
    assert any("dropped by before_send" in line for line in mail_logs(records, logging.INFO))
    mailer = Mailer(lambda: settings, before_send=before_send)
    assert mailer.send_now(a_message("hook@example.com", "drop now")) is False


def test_without_smtp_the_mail_is_logged_and_nothing_is_sent(
    smtp: SmtpServer, records: pytest.LogCaptureFixture
) -> None:
    smtp.clear()
    mailer = Mailer(lambda: settings_for({"enabled": False, "host": smtp.host, "port": smtp.port}))
    mailer.send(a_message("nosmtp@example.com", "Not sent"))
    assert mailer.close(10)
    assert mail_logs(records, logging.INFO) == [
        "SMTP is disabled: mail to nosmtp@example.com (subject 'Not sent') not sent"
    ]
    assert smtp.messages == []
    with pytest.raises(MailerDisabledError, match="SMTP is disabled"):
        Mailer(lambda: settings_for()).send_now(a_message())


def test_an_smtp_server_that_is_down_is_retried_then_logged(
    records: pytest.LogCaptureFixture,
) -> None:
    returned = threading.Event()
    seen: list[bool] = []

    def before_send(message: Message) -> Message:
        seen.append(returned.wait(10))
        return message

    down = {"enabled": True, "host": "127.0.0.1", "port": free_port(), "tls": False}
    mailer = Mailer(lambda: settings_for(down), before_send=before_send, backoff=0.01)
    mailer.send(a_message("down@example.com", "Lost"))  # no exception, and at once
    returned.set()
    assert mailer.flush(30)
    assert seen == [True]
    warnings = mail_logs(records, logging.WARNING)
    assert len(warnings) == 2
    assert warnings[0].startswith("mail to down@example.com (subject 'Lost'): attempt 1 of 3")
    assert "could not connect" in warnings[0]
    (error,) = mail_logs(records, logging.ERROR)
    assert error.startswith("mail to down@example.com (subject 'Lost') not sent after 3 attempt(s)")
    assert mailer.close(10)


def test_each_attempt_reads_the_settings_again(
    smtp: SmtpServer, records: pytest.LogCaptureFixture
) -> None:
    good = smtp.pocketbase_settings()["smtp"]
    calls: list[int] = []

    def settings() -> dict[str, Any]:
        calls.append(1)
        return settings_for(good if len(calls) > 1 else {**good, "port": free_port()})

    mailer = Mailer(settings, backoff=0.01)
    mailer.send(a_message("retry@example.com", "Second time lucky"))
    assert smtp.wait_for(to="retry@example.com").subject == "Second time lucky"
    assert mailer.close(10)
    assert len(calls) == 2
    assert len(mail_logs(records, logging.WARNING)) == 1
    assert mail_logs(records, logging.ERROR) == []


def test_a_refusal_is_not_retried_and_send_now_raises_it(records: pytest.LogCaptureFixture) -> None:
    with SmtpServer(refuse=["ghost@example.com"]) as server:
        settings = settings_for(server.pocketbase_settings()["smtp"])
        mailer = Mailer(lambda: settings, backoff=0.01)
        mailer.send(a_message("ghost@example.com", "Refused"))
        assert mailer.close(10)
        (error,) = mail_logs(records, logging.ERROR)
        assert "not sent after 1 attempt(s)" in error
        assert "ghost@example.com (550 5.1.1 Mailbox unavailable)" in error
        assert mail_logs(records, logging.WARNING) == []

        sender = Mailer(lambda: settings)
        with pytest.raises(MailerError, match="refused every recipient") as refused:
            sender.send_now(a_message("ghost@example.com", "Refused now"))
        assert "550 5.1.1 Mailbox unavailable" in str(refused.value)
        assert sender.send_now(a_message("fine@example.com", "Accepted")) is True
        assert server.wait_for(to="fine@example.com").subject == "Accepted"


def test_the_mailer_authenticates_with_the_settings_credentials() -> None:
    credentials = ("mailer@example.com", "s3cret-pass")
    with SmtpServer(credentials=credentials) as server:
        good = server.pocketbase_settings(
            username=credentials[0], password=credentials[1], authMethod="LOGIN"
        )["smtp"]
        Mailer(lambda: settings_for(good)).send_now(a_message("auth@example.com", "Logged in"))
        assert server.wait_for(to="auth@example.com").subject == "Logged in"
        assert server.logins == [("LOGIN", credentials[0])]
        bad = {**good, "password": "wrong"}
        with pytest.raises(MailerError, match="refused the credentials \\(LOGIN\\): 535"):
            Mailer(lambda: settings_for(bad)).send_now(a_message("auth@example.com", "No"))


def test_close_drains_the_queue_then_refuses_new_mail(
    smtp: SmtpServer, records: pytest.LogCaptureFixture
) -> None:
    gate = threading.Event()

    def before_send(message: Message) -> Message:
        gate.wait(10)
        return message

    settings = settings_for(smtp.pocketbase_settings()["smtp"])
    mailer = Mailer(lambda: settings, before_send=before_send)
    for n in range(5):
        mailer.send(a_message("drain@example.com", f"Queued {n}"))
    assert mailer.pending == 5
    threading.Timer(0.05, gate.set).start()
    assert mailer.close(30)
    assert mailer.pending == 0
    subjects = [m.subject for m in smtp.messages if "drain@example.com" in m.to]
    assert subjects == [f"Queued {n}" for n in range(5)]
    mailer.send(a_message("drain@example.com", "Too late"))
    assert mail_logs(records, logging.WARNING) == [
        "mailer closed: mail to drain@example.com (subject 'Too late') dropped"
    ]
    assert "Too late" not in [m.subject for m in smtp.messages]


def test_close_gives_up_on_a_server_that_stays_down(records: pytest.LogCaptureFixture) -> None:
    down = {"enabled": True, "host": "127.0.0.1", "port": free_port(), "tls": False}
    mailer = Mailer(lambda: settings_for(down), backoff=600)  # would wait 10 minutes to retry
    mailer.send(a_message("gone@example.com", "First"))
    mailer.send(a_message("gone@example.com", "Second"))
    assert mailer.close(0.5) is False
    assert mailer.flush(10)  # the retry wait was cut short: the worker let go
    errors = mail_logs(records, logging.ERROR)
    assert "mailer closed before sending mail to gone@example.com (subject 'Second')" in errors
    assert "mailer closed before sending mail to gone@example.com (subject 'First')" in errors


def test_the_worker_survives_a_failing_hook(
    smtp: SmtpServer, records: pytest.LogCaptureFixture
) -> None:
    def before_send(message: Message) -> Message:
        if message.subject == "boom":
            raise RuntimeError("hook failed")
        return message

    settings = settings_for(smtp.pocketbase_settings()["smtp"])
    mailer = Mailer(lambda: settings, before_send=before_send)
    mailer.send(a_message("survive@example.com", "boom"))
    mailer.send(a_message("survive@example.com", "after"))
    assert smtp.wait_for(to="survive@example.com").subject == "after"
    assert mailer.close(10)
    assert any(r.exc_info for r in records.records if r.name == LOGGER)


def test_otp_mail_code_is_read_by_the_test_helpers(smtp: SmtpServer) -> None:
    settings = settings_for(smtp.pocketbase_settings()["smtp"])
    mail = render_auth_email("otp", settings, users(), ANN, otp="87654321", otp_id="o1")
    Mailer(lambda: settings).send_now(mail)
    assert otp_code(smtp.wait_for(to="ann@example.com", subject_contains="OTP for")) == "87654321"
