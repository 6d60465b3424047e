"""instance_runtime/tools/mailer.py against the real SMTP server of tests/support/smtp.py
(aiosmtpd): what arrives (parts, headers, envelope), AUTH PLAIN/LOGIN, STARTTLS and implicit
TLS with a certificate made here, refusals, and PocketBase's HTML-to-text rules."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from instance_runtime.tools.mailer import (
    MailerError,
    Message,
    SmtpClient,
    SmtpConfig,
    build_mime,
    html_to_text,
)
from tests.support.ports import free_port
from tests.support.smtp import SmtpServer

CREDENTIALS = ("mailer@example.com", "s3cret-pass")


def message(**changes: object) -> Message:
    fields: dict[str, object] = {
        "from_address": "support@example.com",
        "from_name": "Acme Support",
        "to": [("ann@example.com", "Ann Example")],
        "subject": "Hello Ann",
        "html": '<p>Hello <strong>Ann</strong>,</p>\n<p><a href="https://x.test/a?b=1&amp;c=2">Open</a></p>',
    }
    fields.update(changes)
    return Message(**fields)  # type: ignore[arg-type]


def lf(text: str) -> str:
    return text.replace("\r\n", "\n").strip()


def client_for(server: SmtpServer, **smtp: object) -> SmtpClient:
    return SmtpClient(SmtpConfig.from_settings(server.pocketbase_settings(**smtp)["smtp"]))


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it): a self-signed certificate for localhost,
    127.0.0.1 and 127.0.0.2."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.2")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("smtp-tls")
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cafile=str(cert_path))
    return server_ctx, client_ctx


# --- what arrives ----------------------------------------------------------------------------


def test_a_message_arrives_with_html_and_derived_text_parts(smtp: SmtpServer) -> None:
    client_for(smtp).send(
        message(
            to=[("ann@example.com", "Ann Example"), ("bob@example.com", "")],
            cc=[("carol@example.com", "Carol")],
            bcc=[("dave@example.com", "")],
        )
    )
    mail = smtp.wait_for(to="ann@example.com", subject_contains="Hello Ann")
    assert (mail.sender, mail.sender_name) == ("support@example.com", "Acme Support")
    assert mail.envelope_from == "support@example.com"
    assert mail.to == ("ann@example.com", "bob@example.com")
    assert mail.message["To"] == "Ann Example <ann@example.com>, bob@example.com"
    assert mail.message["Cc"] == "Carol <carol@example.com>"
    assert mail.message["Bcc"] is None  # only in the envelope
    assert mail.envelope_to == (
        "ann@example.com",
        "bob@example.com",
        "carol@example.com",
        "dave@example.com",
    )
    assert mail.subject == "Hello Ann"
    # mailyak's layout, as PocketBase sends it: mixed > alternative > plain, html
    assert mail.message.get_content_type() == "multipart/mixed"
    (alternative,) = mail.message.iter_parts()
    assert alternative.get_content_type() == "multipart/alternative"
    kinds = [part.get_content_type() for part in alternative.iter_parts()]
    assert kinds == ["text/plain", "text/html"]
    # (the parts travel with CRLF line ends, which the parsed message keeps)
    assert lf(mail.html) == message().html
    assert lf(mail.text) == "Hello Ann, \n[Open](https://x.test/a?b=1&c=2)"
    message_id = str(mail.message["Message-ID"])
    assert message_id.startswith("<") and message_id.endswith("@example.com>")
    assert mail.message["Date"] is not None


def test_given_text_headers_and_unicode_are_kept(smtp: SmtpServer) -> None:
    client_for(smtp).send(
        message(
            from_name="Ünïcode Støre",
            subject="Grüße\r\nBcc: injected@example.com",  # a line break cannot start a header
            text="The plain version.",
            headers={"Message-ID": "<fixed-id@example.com>", "X-Pocketfleet": "yes"},
        )
    )
    mail = smtp.wait_for(to="ann@example.com", subject_contains="Grüße")
    assert mail.subject == "Grüße Bcc: injected@example.com"
    assert mail.envelope_to == ("ann@example.com",)
    assert mail.sender_name == "Ünïcode Støre"
    assert lf(mail.text) == "The plain version."
    assert mail.message["Message-ID"] == "<fixed-id@example.com>"
    assert mail.message.get_all("Message-ID") == ["<fixed-id@example.com>"]
    assert mail.message["X-Pocketfleet"] == "yes"


def test_a_text_only_message_has_no_html_part() -> None:
    mime = build_mime(message(html="", text="Just text"))
    (alternative,) = mime.iter_parts()
    assert [p.get_content_type() for p in alternative.iter_parts()] == ["text/plain"]


def test_bad_messages_are_refused_before_connecting() -> None:
    closed = SmtpClient(SmtpConfig(host="127.0.0.1", port=free_port()))
    with pytest.raises(MailerError, match="no recipient") as no_one:
        closed.send(message(to=[]))
    assert not no_one.value.transient
    with pytest.raises(MailerError, match="invalid address") as injected:
        closed.send(message(to=[("ann@example.com\r\nRCPT TO:<x@example.com>", "")]))
    assert not injected.value.transient


# --- refusals --------------------------------------------------------------------------------


def test_a_server_that_is_down_is_a_transient_error() -> None:
    port = free_port()
    with pytest.raises(MailerError, match=f"127.0.0.1:{port} could not connect") as down:
        SmtpClient(SmtpConfig(host="127.0.0.1", port=port)).send(message())
    assert down.value.transient


def test_refused_recipients_are_a_permanent_error() -> None:
    with SmtpServer(refuse=["ghost@example.com"]) as server:
        with pytest.raises(MailerError, match="refused every recipient") as refused:
            client_for(server).send(message(to=[("ghost@example.com", "")]))
        assert "ghost@example.com (550 5.1.1 Mailbox unavailable)" in str(refused.value)
        assert not refused.value.transient
        assert server.messages == []

        # one refused among several: the others got it, and a retry would send them a copy
        with pytest.raises(MailerError, match="refused some recipients") as partly:
            client_for(server).send(
                message(to=[("ann@example.com", ""), ("ghost@example.com", "")])
            )
        assert not partly.value.transient
        assert server.wait_for(to="ann@example.com").envelope_to == ("ann@example.com",)


# --- AUTH --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PLAIN", "LOGIN", ""])
def test_authentication_uses_the_configured_method(method: str) -> None:
    login, password = CREDENTIALS
    with SmtpServer(credentials=CREDENTIALS) as server:
        client_for(server, username=login, password=password, authMethod=method).send(message())
        assert server.wait_for(to="ann@example.com").subject == "Hello Ann"
        assert server.logins == [(method or "PLAIN", login)]  # "" falls back to PLAIN


def test_wrong_or_missing_credentials_are_refused() -> None:
    login, _ = CREDENTIALS
    with SmtpServer(credentials=CREDENTIALS) as server:
        with pytest.raises(MailerError, match="refused the credentials \\(PLAIN\\): 535") as bad:
            client_for(server, username=login, password="wrong").send(message())
        assert not bad.value.transient
        with pytest.raises(MailerError, match=r"530 5\.7\.0 Authentication required") as none:
            client_for(server).send(message())
        assert not none.value.transient
        assert (server.messages, server.logins) == ([], [])


def test_a_server_without_auth_is_an_error_when_credentials_are_set(smtp: SmtpServer) -> None:
    with pytest.raises(MailerError, match="does not support AUTH"):
        client_for(smtp, username="someone", password="pw").send(message(subject="no auth"))
    assert all(m.subject != "no auth" for m in smtp.messages)


def test_credentials_never_travel_in_clear_to_a_host_that_is_not_localhost() -> None:
    login, password = CREDENTIALS
    with SmtpServer(host="127.0.0.2", credentials=CREDENTIALS) as server:
        with pytest.raises(MailerError, match="unencrypted connection") as refused:
            client_for(server, username=login, password=password).send(message())
        assert not refused.value.transient
        assert server.logins == []


# --- TLS ---------------------------------------------------------------------------------


def test_starttls_is_used_when_the_server_offers_it(
    tls: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_ctx, client_ctx = tls
    login, password = CREDENTIALS
    with SmtpServer(host="127.0.0.2", credentials=CREDENTIALS, starttls=server_ctx) as server:
        settings = server.pocketbase_settings(username=login, password=password)["smtp"]
        SmtpClient(SmtpConfig.from_settings(settings), ssl_context=client_ctx).send(message())
        mail = server.wait_for(to="ann@example.com")
        assert mail.tls  # upgraded, so the credentials could go to a non-local host
        assert server.logins == [("PLAIN", login)]


def test_implicit_tls_and_certificate_checks(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls
    with SmtpServer(implicit_tls=server_ctx) as server:
        settings = server.pocketbase_settings(tls=True)["smtp"]
        SmtpClient(SmtpConfig.from_settings(settings), ssl_context=client_ctx).send(message())
        assert server.wait_for(to="ann@example.com").tls
        # the system's trust store does not know this certificate
        with pytest.raises(MailerError, match="certificate") as untrusted:
            SmtpClient(SmtpConfig.from_settings(settings)).send(message())
        assert not untrusted.value.transient
        assert len(server.messages) == 1


def test_settings_are_read_as_pocketbase_stores_them() -> None:
    config = SmtpConfig.from_settings(
        {
            "enabled": True,
            "host": "smtp.example.com",
            "port": 465,
            "username": "u",
            "password": "p",
            "authMethod": "login",
            "tls": True,
            "localName": "mx.example.com",
        }
    )
    assert config == SmtpConfig(
        host="smtp.example.com",
        port=465,
        username="u",
        password="p",
        auth_method="LOGIN",
        tls=True,
        local_name="mx.example.com",
        enabled=True,
    )
    # PocketBase's default settings (no password key: it is never returned)
    default = SmtpConfig.from_settings(
        {"enabled": False, "port": 587, "host": "smtp.example.com", "username": "",
         "authMethod": "", "tls": False, "localName": ""}
    )  # fmt: skip
    assert (default.enabled, default.auth_method, default.password) == (False, "PLAIN", "")


# --- HTML to text --------------------------------------------------------------------------

# PocketBase's own expectations (tools/mailer/html2text_test.go, 0.40) as data, and a few more
# of ours (the page's tabs are spaces here: any run of whitespace reads as one space).
HTML_TO_TEXT = [
    ("", ""),
    ("ab  c", "ab c"),
    ("<!-- test html comment -->", ""),
    ("<!-- test html comment -->   a   ", "a"),
    ("<span>a</span>b<span>c</span>", "abc"),
    ('<a href="a/b/c">test</span>', "[test](a/b/c)"),
    ('<a href="">test</span>', "[test]"),
    ("<span>a</span>  <span>b</span>", "a b"),
    ("<span>a</span>   b   <span>c</span>", "a b c"),
    ("<span>a</span>   b   <div>c</div>", "a b \r\nc"),
    (
        "<p>a<br>b<br/><br />c</p><ul><li>x</li><li><a href='u'></a></li></ul>",
        "a\r\nb\r\n\r\nc\r\n- x\r\n- [LINK](u)",
    ),
    ("<style>p{}</style><script>x<y</script><svg><svg></svg>z</svg><img src=a>ok", "ok"),
    ("<p>caf&eacute; &amp; &lt;tea&gt;</p>", "café & <tea>"),
]  # fmt: skip

PAGE = """
    <!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">
    <html xmlns="http://www.w3.org/1999/xhtml">
    <head>
        <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
        <meta name="viewport" content="width=device-width,initial-scale=1" />
        <style>
            body {
                padding: 0;
            }
        </style>
    </head>
    <body>
        <!-- test html comment -->
        <style>
            body {
                padding: 0;
            }
        </style>
        <div class="wrapper">
            <div class="content">
                <p>Lorem ipsum</p>
                <p>Dolor sit amet</p>
                <p>
                    <a href="a/b/c">Verify</a>
                </p>
                <br>
                <p>
                    <a href="a/b/c"><strong>Verify2.1</strong> <strong>Verify2.2</strong></a>
                </p>
                <br>
                <br>
                <div>
                    <div>
                        <div>
                            <ul>
                                <li>ul.test1</li>
                                <li>ul.test2</li>
                                <li>ul.test3</li>
                            </ul>
                            <ol>
                                <li>ol.test1</li>
                                <li>ol.test2</li>
                                <li>ol.test3</li>
                            </ol>
                        </div>
                    </div>
                </div>
                <select>
                    <option>Option 1</option>
                    <option>Option 2</option>
                </select>
                <textarea>test</textarea>
                <input type="text" value="test" />
                <button>test</button>
                <p>
                    Thanks,<br/>
                    PocketBase team
                </p>
            </div>
        </div>
    </body>
    </html>
"""


@pytest.mark.parametrize(("html", "text"), HTML_TO_TEXT)
def test_html_to_text_follows_pocketbase(html: str, text: str) -> None:
    assert html_to_text(html) == text


def test_html_to_text_of_a_whole_page() -> None:
    assert html_to_text(PAGE) == (
        "Lorem ipsum \r\nDolor sit amet \r\n[Verify](a/b/c)  \r\n[Verify2.1 Verify2.2](a/b/c)  "
        "\r\n\r\n- ul.test1 \r\n- ul.test2 \r\n- ul.test3  \r\n"
        "- ol.test1 \r\n- ol.test2 \r\n- ol.test3         \r\nThanks,\r\nPocketBase team"
    )
