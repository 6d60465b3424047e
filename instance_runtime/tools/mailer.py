"""Delivery of one e-mail over SMTP, as PocketBase's `tools/mailer` does it (stdlib only).

Contract:

- `Message` is one e-mail: sender, `to`/`cc`/`bcc` as `(address, name)` pairs, subject, HTML
  and text bodies and extra headers. `Message.recipients()` is the SMTP envelope (to, cc, bcc;
  `bcc` never appears in a header).
- `SmtpConfig.from_settings(settings["smtp"])` reads PocketBase's `settings.smtp` shape
  (`enabled, host, port, username, password, authMethod, tls, localName`).
- `SmtpClient(config).send(message)` delivers one message and returns, or raises `MailerError`
  whose `transient` says whether trying again later may help (network errors, a dropped
  connection and 4xx replies are transient; 5xx replies, refused credentials and bad input
  are not). As PocketBase's SMTP client:
  * `tls` true means implicit TLS (SMTPS); otherwise the connection is plain and upgraded
    with STARTTLS when the server offers it. Certificates are verified (`ssl_context`
    replaces the default context, e.g. to trust a private CA).
  * EHLO (HELO as a fallback) introduces the client as `localName`, or "localhost".
  * With a username or password the client authenticates with AUTH PLAIN, or AUTH LOGIN when
    `authMethod` is "LOGIN"; a server that offers no AUTH is an error, and credentials are
    never sent over an unencrypted connection except to localhost / 127.0.0.1 / ::1 (Go's
    net/smtp rule).
- `build_mime(message)` is the message on the wire: `multipart/mixed` holding a
  `multipart/alternative` of `text/plain` then `text/html` (mailyak's layout, empty parts left
  out). An empty `text` is derived from the HTML with `html_to_text`. A `Message-ID`
  (`<15 random characters@sender's domain>`) and a `Date` are added unless `headers` has them.
  CR/LF in an address is refused; in the subject it becomes a space.
- `html_to_text(html)` is PocketBase's rudimentary converter: text with runs of whitespace
  collapsed, a line break before each block element and for each `<br>`, `<li>` prefixed with
  "- ", links as `[label](href)` (`[LINK]` without a label), the content of `style`, `script`,
  `img`, `svg`, form controls and the like dropped, the result trimmed.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
import smtplib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from html.parser import HTMLParser
from typing import Any

from instance_runtime.tools.security import random_string

AUTH_PLAIN = "PLAIN"
AUTH_LOGIN = "LOGIN"
DEFAULT_TIMEOUT = 10.0
_LOCALHOSTS = frozenset({"localhost", "127.0.0.1", "::1"})

# (address, display name); the name may be "".
MailAddress = tuple[str, str]


class MailerError(Exception):
    """A message could not be delivered; `transient` is True when a later attempt may work."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(kw_only=True)
class Message:
    """One e-mail, as PocketBase's `mailer.Message` (attachments are not supported)."""

    from_address: str
    from_name: str = ""
    to: list[MailAddress] = field(default_factory=list)
    cc: list[MailAddress] = field(default_factory=list)
    bcc: list[MailAddress] = field(default_factory=list)
    subject: str = ""
    html: str = ""
    text: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    # what the message is about, for hooks (e.g. the auth mail's kind and record); never sent
    context: dict[str, Any] = field(default_factory=dict)

    def recipients(self) -> list[str]:
        """The envelope recipients: every address of `to`, `cc` and `bcc`, in that order."""
        return [address for address, _ in (*self.to, *self.cc, *self.bcc)]


@dataclass(frozen=True)
class SmtpConfig:
    """PocketBase's `settings.smtp` (see the module docstring)."""

    host: str
    port: int = 587
    username: str = ""
    password: str = ""
    auth_method: str = AUTH_PLAIN
    tls: bool = False
    local_name: str = ""
    enabled: bool = True

    @classmethod
    def from_settings(cls, smtp: dict[str, Any]) -> SmtpConfig:
        """The config of a PocketBase `settings.smtp` dict (missing keys: PocketBase's zero)."""
        method = str(smtp.get("authMethod") or AUTH_PLAIN).upper()
        return cls(
            enabled=bool(smtp.get("enabled", False)),
            host=str(smtp.get("host") or ""),
            port=int(smtp.get("port") or 0),
            username=str(smtp.get("username") or ""),
            password=str(smtp.get("password") or ""),
            auth_method=AUTH_LOGIN if method == AUTH_LOGIN else AUTH_PLAIN,
            tls=bool(smtp.get("tls", False)),
            local_name=str(smtp.get("localName") or ""),
        )


# ------------------------------------------------------------------------------ the client
class SmtpClient:
    """Sends messages through one SMTP server; one connection per `send` (thread-safe)."""

    def __init__(
        self,
        config: SmtpConfig,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.timeout = timeout
        self._ssl_context = ssl_context

    def _where(self) -> str:
        return f"SMTP server {self.config.host}:{self.config.port}"

    def send(self, message: Message) -> None:
        """Deliver `message`; `MailerError` when it was not accepted (see the module doc)."""
        recipients = message.recipients()
        if not recipients:
            raise MailerError("the message has no recipient", transient=False)
        for address in (message.from_address, *recipients):
            if "\r" in address or "\n" in address:
                raise MailerError(f"invalid address {address!r}", transient=False)
        try:
            mime = build_mime(message)
        except (ValueError, TypeError, IndexError) as exc:  # malformed address or header
            raise MailerError(f"invalid message: {exc}", transient=False) from exc
        if not self.config.host:
            raise MailerError("no SMTP host is configured", transient=False)
        if not 0 < self.config.port < 65536:
            raise MailerError(f"invalid SMTP port {self.config.port}", transient=False)
        try:
            client = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            raise self._error(exc, "could not connect") from exc
        try:
            self._prepare(client)
            refused = client.send_message(mime, message.from_address, recipients)
        except MailerError:
            raise
        except (OSError, smtplib.SMTPException) as exc:
            raise self._error(exc, "did not accept the message") from exc
        finally:
            _quit(client)
        if refused:
            listed = ", ".join(
                f"{a} ({code} {_text(reply)})" for a, (code, reply) in refused.items()
            )
            # delivered to the others: trying again would send them a second copy
            raise MailerError(f"{self._where()} refused some recipients: {listed}", transient=False)

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _connect(self) -> smtplib.SMTP:
        cfg = self.config
        local = cfg.local_name or "localhost"
        if cfg.tls:
            return smtplib.SMTP_SSL(
                cfg.host, cfg.port, local_hostname=local, timeout=self.timeout,
                context=self._context(),
            )  # fmt: skip
        return smtplib.SMTP(cfg.host, cfg.port, local_hostname=local, timeout=self.timeout)

    def _prepare(self, client: smtplib.SMTP) -> None:
        """EHLO, STARTTLS when offered (plain connections), then AUTH when credentials are set."""
        cfg = self.config
        client.ehlo_or_helo_if_needed()
        if not cfg.tls and client.has_extn("starttls"):
            client.starttls(context=self._context())
            client.ehlo()
        if not (cfg.username or cfg.password):
            return
        if not client.has_extn("auth"):
            raise MailerError(f"{self._where()} does not support AUTH", transient=False)
        encrypted = isinstance(client.sock, ssl.SSLSocket)
        if not encrypted and cfg.host.lower() not in _LOCALHOSTS:
            raise MailerError(
                f"refusing to send the SMTP credentials to {cfg.host} over an unencrypted "
                "connection (enable tls, or use a server that offers STARTTLS)",
                transient=False,
            )
        client.user, client.password = cfg.username, cfg.password
        try:
            if cfg.auth_method == AUTH_LOGIN:
                client.auth("LOGIN", client.auth_login, initial_response_ok=False)
            else:
                client.auth("PLAIN", client.auth_plain)
        except smtplib.SMTPResponseException as exc:
            raise MailerError(
                f"{self._where()} refused the credentials ({cfg.auth_method}): "
                f"{exc.smtp_code} {_text(exc.smtp_error)}",
                transient=400 <= exc.smtp_code < 500,
            ) from exc

    def _error(self, exc: BaseException, what: str) -> MailerError:
        where = self._where()
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            codes = [code for code, _ in exc.recipients.values()]
            listed = ", ".join(
                f"{address} ({code} {_text(reply)})"
                for address, (code, reply) in exc.recipients.items()
            )
            return MailerError(
                f"{where} refused every recipient: {listed}",
                transient=bool(codes) and all(400 <= c < 500 for c in codes),
            )
        if isinstance(exc, smtplib.SMTPResponseException):
            return MailerError(
                f"{where} {what}: {exc.smtp_code} {_text(exc.smtp_error)}",
                transient=400 <= exc.smtp_code < 500,
            )
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return MailerError(f"{where} closed the connection: {exc}", transient=True)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return MailerError(f"{where}: TLS certificate refused: {exc}", transient=False)
        if isinstance(exc, smtplib.SMTPException):
            return MailerError(f"{where} {what}: {exc}", transient=False)
        detail = str(exc) or type(exc).__name__
        return MailerError(f"{where} {what}: {detail}", transient=True)


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (OSError, smtplib.SMTPException):
        client.close()


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)


# ------------------------------------------------------------------------------ MIME
def _address(address: str, name: str) -> Address:
    return Address(display_name=name, addr_spec=address)


def _addresses(pairs: Sequence[MailAddress]) -> list[Address]:
    return [_address(address, name) for address, name in pairs]


def build_mime(message: Message) -> EmailMessage:
    """The message as sent (see the module docstring); ValueError for a malformed address."""
    mime = EmailMessage(policy=email.policy.SMTP)
    mime["From"] = _address(message.from_address, message.from_name)
    mime["Subject"] = re.sub(r"[\r\n]+", " ", message.subject)
    if message.to:
        mime["To"] = _addresses(message.to)
    if message.cc:
        mime["Cc"] = _addresses(message.cc)
    text = message.text or (html_to_text(message.html) if message.html else "")
    if text:
        mime.set_content(text, subtype="plain")
        if message.html:
            mime.add_alternative(message.html, subtype="html")
    else:
        mime.set_content(message.html, subtype="html")
    if mime.get_content_type() != "multipart/alternative":
        mime.make_alternative()
    mime.make_mixed()
    given = {name.lower() for name in message.headers}
    for name, value in message.headers.items():
        if name in mime:
            mime.replace_header(name, value)
        else:
            mime[name] = value
    if "message-id" not in given:
        _, _, domain = message.from_address.rpartition("@")
        if domain:
            mime["Message-ID"] = f"<{random_string(15)}@{domain}>"
    if "date" not in given:
        mime["Date"] = email.utils.format_datetime(datetime.now(UTC).replace(microsecond=0))
    return mime


# ------------------------------------------------------------------------------ html -> text
_WHITESPACE = re.compile(r"[\t\n\f\r ]+")  # Go's RE2 \s
_SKIP = frozenset(
    {
        "style", "script", "iframe", "applet", "object", "svg", "img", "button", "form",
        "textarea", "input", "select", "option", "template",
    }
)  # fmt: skip
_INLINE = frozenset({"a", "span", "small", "strike", "strong", "sub", "sup", "em", "b", "u", "i"})
_VOID = frozenset(
    {
        "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
        "source", "track", "wbr",
    }
)  # fmt: skip


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self._link: list[str] | None = None  # the label of the open <a>, if any
        self._href = ""
        self._can_add_newline = False
        self._pending = ""  # text not written yet (adjacent data chunks form one text node)
        self._skip_tag = ""  # the skipped element we are inside of, and its nesting depth
        self._skip_depth = 0

    def _write(self, text: str) -> None:
        (self._link if self._link is not None else self.out).append(text)

    def _flush_text(self) -> None:
        text, self._pending = self._pending, ""
        if not text:
            return
        text = _WHITESPACE.sub(" ", text)
        if not self._can_add_newline:
            text = text.lstrip(" ")
        if text:
            self._write(text)
            self._can_add_newline = True

    def _end_link(self) -> None:
        if self._link is None:
            return
        label = "".join(self._link).strip() or "LINK"
        self._link = None
        self.out.append(f"[{label}]")
        if self._href:
            self.out.append(f"({self._href})")

    def handle_data(self, data: str) -> None:
        if not self._skip_depth:
            self._pending += data

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_depth:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        self._flush_text()
        if tag in _SKIP:
            if tag not in _VOID:
                self._skip_tag, self._skip_depth = tag, 1
            return
        if tag == "a":
            self._end_link()  # an <a> closes the one still open (HTML's parsing rules)
            self._link = []
            self._href = next((value or "" for key, value in attrs if key == "href"), "")
        if tag == "br" or (self._can_add_newline and tag not in _INLINE):
            self._write("\r\n")
            self._can_add_newline = False
        if tag == "li":
            self._write("- ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self._skip_depth:
            if tag == self._skip_tag:
                self._skip_depth -= 1
            return
        self._flush_text()
        if tag == "a":
            self._end_link()
        elif tag == "br":  # </br> is read as <br>
            self.handle_starttag("br", [])

    def close(self) -> None:
        super().close()
        if not self._skip_depth:
            self._flush_text()
        self._end_link()


def html_to_text(html: str) -> str:
    """A plain-text rendering of `html` by PocketBase's rules (see the module docstring)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return "".join(parser.out).strip()
