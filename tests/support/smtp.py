"""A real SMTP server on loopback for tests (aiosmtpd, in its own thread) that keeps every
message it receives, parsed with the stdlib ``email`` package, and pulls PocketBase's tokens and
OTP codes out of them.

    with SmtpServer() as smtp:
        httpx.patch(f"{url}/api/settings", json=smtp.pocketbase_settings(), headers=auth)
        ...  # POST /api/collections/users/request-verification
        mail = smtp.wait_for(to="ann@example.com", subject_contains="Verify your")
        token = pocketbase_token(mail, "confirm-verification")

Plain SMTP without authentication: PocketBase is pointed at it with ``smtp.tls=false`` (its
mailer then tries STARTTLS only when the server offers it, and this one does not). On request it
also requires AUTH (``credentials=(login, password)``, PLAIN or LOGIN, allowed without TLS since
it is on loopback; ``logins`` lists who logged in and how), refuses some recipients with 550
(``refuse=[...]``), offers STARTTLS (``starttls=server_ssl_context``) or speaks implicit TLS
(``implicit_tls=server_ssl_context``); ``ReceivedMail.tls`` says whether a message came over TLS.

Where PocketBase's default messages come from (0.40.6; the same in 0.39's source):
``core/collection_model_auth_templates.go`` holds the default templates of an auth collection
(verification, password reset, email change, OTP, login alert) with the placeholders
``{APP_NAME}``, ``{APP_URL}``, ``{TOKEN}``, ``{OTP}``, ``{OTP_ID}``, ``{ALERT_INFO}``;
``mails/record.go`` renders and sends them (HTML only: the mailer derives the text part).
The links are ``{APP_URL}/_/#/auth/confirm-verification/{TOKEN}``,
``.../confirm-password-reset/{TOKEN}`` and ``.../confirm-email-change/{TOKEN}``; the OTP mail says
``Your one-time password is: <strong>{OTP}</strong>``.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import html
import re
import ssl
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from .ports import free_port

TokenAction = Literal["confirm-verification", "confirm-password-reset", "confirm-email-change"]

# A PocketBase token is a JWT: three base64url parts.
_TOKEN = r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+"
_LINK = re.compile(r"""https?://[^\s"'<>\]\)]+""")
_OTP_HTML = re.compile(r"one-time password is:\s*<strong>\s*([^<\s]+)\s*</strong>", re.IGNORECASE)
_OTP_TEXT = re.compile(r"one-time password is:\s*\**\s*([0-9A-Za-z]+)", re.IGNORECASE)


@dataclass(frozen=True)
class ReceivedMail:
    """One message as the server got it: the SMTP envelope and the parsed message."""

    envelope_from: str
    envelope_to: tuple[str, ...]
    message: EmailMessage = field(repr=False)
    raw: bytes = field(repr=False)
    tls: bool = False

    @property
    def sender(self) -> str:
        """The address of the ``From`` header (``noreply@example.com`` for PocketBase's default)."""
        found = _addresses(self.message, "From")
        return found[0] if found else ""

    @property
    def sender_name(self) -> str:
        header = self.message["From"]
        addresses = getattr(header, "addresses", ())
        return str(addresses[0].display_name) if addresses else ""

    @property
    def to(self) -> tuple[str, ...]:
        """The addresses of the ``To`` header, lower-cased."""
        return tuple(_addresses(self.message, "To"))

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    @property
    def text(self) -> str:
        """The text/plain body ("" when the message has none)."""
        return _body(self.message, "plain")

    @property
    def html(self) -> str:
        """The text/html body ("" when the message has none)."""
        return _body(self.message, "html")

    def links(self) -> list[str]:
        """Every http(s) URL in the message: the HTML's (entities decoded), then the text's."""
        found: list[str] = []
        for body in (html.unescape(self.html), self.text):
            for link in _LINK.findall(body):
                if link not in found:
                    found.append(link)
        return found


def _addresses(message: EmailMessage, name: str) -> list[str]:
    header: Any = message[name]
    if header is None:
        return []
    return [str(address.addr_spec).lower() for address in getattr(header, "addresses", ())]


def _body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return ""
    content: str = part.get_content()
    return content


def pocketbase_link(mail: ReceivedMail, action: TokenAction) -> str:
    """The first link of ``mail`` to ``{APP_URL}/_/#/auth/{action}/{TOKEN}``; ValueError if none."""
    marker = f"/_/#/auth/{action}/"
    for link in mail.links():
        if marker in link:
            return link
    raise ValueError(f"no {action} link in {mail.subject!r}: {mail.links()}")


def token_from_link(link: str, action: TokenAction) -> str:
    """The token of a PocketBase ``/_/#/auth/{action}/{TOKEN}`` link; ValueError otherwise."""
    found = re.search(rf"/_/#/auth/{re.escape(action)}/({_TOKEN})(?:$|[?&#/])", link)
    if found is None:
        raise ValueError(f"{link!r} is not a {action} link with a token")
    return found.group(1)


def pocketbase_token(mail: ReceivedMail, action: TokenAction) -> str:
    """The token that ``mail``'s ``action`` link carries (verification, reset, email change)."""
    return token_from_link(pocketbase_link(mail, action), action)


def otp_code(mail: ReceivedMail) -> str:
    """The one-time password of PocketBase's default OTP message; ValueError if none."""
    found = _OTP_HTML.search(mail.html) or _OTP_TEXT.search(mail.text)
    if found is None:
        raise ValueError(f"no one-time password in {mail.subject!r}")
    return found.group(1)


class _Collector:
    """aiosmtpd handler: parse each message and hand it to the server object."""

    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if address.lower() in self._server.refuse:
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        mail_from = envelope.mail_from or ""
        self._server._deliver(
            ReceivedMail(
                envelope_from=mail_from.lower(),
                envelope_to=tuple(address.lower() for address in envelope.rcpt_tos),
                message=message,
                raw=raw,
                tls=_over_tls(server),
            )
        )
        return "250 Message accepted for delivery"


def _over_tls(server: SMTP) -> bool:
    """Whether the session is encrypted (implicit TLS, or after STARTTLS)."""
    transport = server.transport
    return transport is not None and transport.get_extra_info("ssl_object") is not None


class SmtpServer:
    """An SMTP server on ``host:port`` (a free loopback port by default) while the context runs.

    ``messages`` lists everything received; ``wait_for`` hands out each message once, the oldest
    match first, so a test that triggers two mails to one address gets them in order.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        credentials: tuple[str, str] | None = None,
        refuse: Iterable[str] = (),
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.credentials = credentials
        self.refuse = frozenset(address.lower() for address in refuse)
        self.logins: list[tuple[str, str]] = []  # (mechanism, login) of each accepted AUTH
        self._starttls = starttls
        self._implicit_tls = implicit_tls
        self._lock = threading.Condition()
        self._received: list[ReceivedMail] = []
        self._pending: list[ReceivedMail] = []
        self._controller: Controller | None = None

    def __enter__(self) -> SmtpServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        if self._controller is not None:
            return
        options: dict[str, Any] = {}
        if self.credentials is not None:
            options.update(
                auth_required=True, auth_require_tls=False, authenticator=self._authenticate
            )
        if self._starttls is not None:
            options["tls_context"] = self._starttls
        controller = Controller(
            _Collector(self),
            hostname=self.host,
            port=self.port,
            ssl_context=self._implicit_tls,
            **options,
        )
        controller.start()  # returns once the server answers on the port
        self._controller = controller

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            with contextlib.suppress(AssertionError):  # already stopped
                controller.stop()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self.credentials is None:
            return AuthResult(success=False, handled=False)
        login, password = data.login.decode(), data.password.decode()
        if (login, password) != self.credentials:
            return AuthResult(success=False, handled=False)
        with self._lock:
            self.logins.append((mechanism, login))
        return AuthResult(success=True)

    @property
    def messages(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._received)

    def clear(self) -> None:
        """Forget every message received so far."""
        with self._lock:
            self._received.clear()
            self._pending.clear()

    def pocketbase_settings(self, **smtp: Any) -> dict[str, Any]:
        """The body of ``PATCH /api/settings`` that makes PocketBase send its mail here."""
        settings = {"enabled": True, "host": self.host, "port": self.port, "tls": False}
        return {"smtp": {**settings, **smtp}}

    def wait_for(
        self,
        *,
        to: str | None = None,
        subject_contains: str | None = None,
        timeout: float = 10.0,
    ) -> ReceivedMail:
        """The oldest message not handed out yet that is addressed to ``to`` (envelope or header,
        case-insensitive) and whose subject contains ``subject_contains``; TimeoutError with what
        did arrive when none comes within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                for mail in self._pending:
                    if _matches(mail, to, subject_contains):
                        self._pending.remove(mail)
                        return mail
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.to, m.subject) for m in self._received]
                    raise TimeoutError(
                        f"no mail to={to!r} subject~{subject_contains!r} within {timeout}s; "
                        f"received: {seen}"
                    )
                self._lock.wait(left)

    def _deliver(self, mail: ReceivedMail) -> None:
        with self._lock:
            self._received.append(mail)
            self._pending.append(mail)
            self._lock.notify_all()


def _matches(mail: ReceivedMail, to: str | None, subject_contains: str | None) -> bool:
    if to is not None and to.lower() not in (*mail.envelope_to, *mail.to):
        return False
    return subject_contains is None or subject_contains in mail.subject
