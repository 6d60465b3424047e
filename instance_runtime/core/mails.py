"""The runtime's mail: auth e-mails rendered as PocketBase renders them, and a mailer that sends
them in the background.

Contract:

- `render_auth_email(kind, settings, collection, record, ...)` builds the `Message` of one auth
  e-mail as PocketBase's `mails/record.go` does: the collection's template for `kind`
  (`verificationTemplate`, `resetPasswordTemplate`, `confirmEmailChangeTemplate`,
  `otp.emailTemplate`, `authAlert.emailTemplate`; PocketBase's default when missing) with its
  placeholders replaced in the subject and the body, the body wrapped in PocketBase's HTML
  layout (the text part is derived from it when sent). From `settings.meta.senderName` /
  `senderAddress`; to the record's `email`, except `confirmEmailChange`, which goes to the
  NEW address.
  Placeholders: `{APP_NAME}`, `{APP_URL}` (from `settings.meta`, as they are); per kind
  `{TOKEN}` (verification, resetPassword, confirmEmailChange), `{OTP}` and `{OTP_ID}` (otp),
  `{ALERT_INFO}` (authAlert, HTML-escaped); and `{RECORD:name}` for every field of the
  collection that is not hidden (so never `password` or `tokenKey`), its value as Go's
  `cast.ToString` writes it (numbers without a needless fraction, `true`/`false`, dates as
  stored, JSON compact with sorted keys, multi-value fields empty), HTML-escaped as Go's
  `html.EscapeString` does except for number, bool, date and autodate fields. Replacement is
  one pass: a value is never scanned for placeholders again. Unknown placeholders stay as
  written.
- `DEFAULT_TEMPLATES[kind]` is PocketBase's default `{"subject", "body"}`;
  `default_template_options()` the same in an auth collection's options shape, to fill a new
  auth collection's options with. Both come from `auth_templates.json` (with `LAYOUT`).
- `Mailer(settings_provider)` sends. `settings_provider()` returns the whole settings dict
  (called from the worker thread as well, so it must be thread-safe), read afresh for each
  attempt. `send(message)` only queues and returns; one worker thread applies `before_send`,
  then sends with `attempts` tries (waiting `backoff`, then twice as long, ... between
  transient failures) and logs the outcome to the `instance_runtime.mail` logger: with
  `smtp.enabled` false it logs the recipients and subject at INFO and sends nothing (the
  request that asked for the mail still succeeds, as with PocketBase); a failure is logged at
  ERROR and never reaches the caller. `send_now(message)` sends in the caller's thread, once,
  and raises `MailerError` (`MailerDisabledError` when SMTP is off). `before_send(message)` is
  the hook point of `on_mailer_send`: it returns the message to send (possibly another one) or
  None to drop it; it runs in the worker for `send` (an exception there is logged and the
  message dropped) and in the caller's thread for `send_now` (an exception propagates). It
  also runs when SMTP is off, before the message is logged. `send(message, on_sent=...,
  on_failed=...)` calls, in the worker, `on_sent(delivered_message)` once the message was
  delivered, or `on_failed()` when it was not (SMTP off, or every attempt failed); neither
  when `before_send` dropped it (a hook took care of it); an exception there is logged.
  `flush(timeout)` waits until the queue is empty; `close(timeout)` stops accepting mail and
  drains the queue, giving up (and logging what is dropped) after `timeout`.

`auth_templates.json` holds the templates and the layout as PocketBase 0.40.6 sends them
(tests/instance_runtime/core/test_mails.py compares whole messages with the real binary's).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, get_args

from instance_runtime.core.models import Collection, Field
from instance_runtime.tools.mailer import (
    DEFAULT_TIMEOUT,
    MailerError,
    Message,
    SmtpClient,
    SmtpConfig,
)

log = logging.getLogger("instance_runtime.mail")

AuthEmailKind = Literal["verification", "resetPassword", "confirmEmailChange", "otp", "authAlert"]
AUTH_EMAIL_KINDS: tuple[str, ...] = get_args(AuthEmailKind)

# Where each kind's template lives in an auth collection's options.
TEMPLATE_OPTION_PATHS: dict[str, tuple[str, ...]] = {
    "verification": ("verificationTemplate",),
    "resetPassword": ("resetPasswordTemplate",),
    "confirmEmailChange": ("confirmEmailChangeTemplate",),
    "otp": ("otp", "emailTemplate"),
    "authAlert": ("authAlert", "emailTemplate"),
}

_DATA: dict[str, Any] = json.loads(
    Path(__file__).with_name("auth_templates.json").read_text(encoding="utf-8")
)
DEFAULT_TEMPLATES: dict[str, dict[str, str]] = _DATA["templates"]
LAYOUT: str = _DATA["layout"]  # PocketBase's mails/templates layout; "{{content}}" = the body
_LAYOUT_HEAD, _LAYOUT_TAIL = LAYOUT.split("{{content}}")

_NOT_ESCAPED = frozenset({"autodate", "date", "bool", "number"})
_TOKEN_KINDS = frozenset({"verification", "resetPassword", "confirmEmailChange"})


class MailerDisabledError(MailerError):
    """`send_now` while `settings.smtp.enabled` is false."""

    def __init__(self) -> None:
        super().__init__("SMTP is disabled (settings.smtp.enabled is false)", transient=False)


# ------------------------------------------------------------------------------ templates
def default_template_options() -> dict[str, Any]:
    """PocketBase's default templates in an auth collection's options shape (a fresh copy)."""
    options: dict[str, Any] = {}
    for kind, path in TEMPLATE_OPTION_PATHS.items():
        target = options
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = copy.deepcopy(DEFAULT_TEMPLATES[kind])
    return options


def email_template(collection: Collection, kind: str) -> dict[str, str]:
    """The collection's `{"subject", "body"}` for `kind`, PocketBase's default when unset."""
    if kind not in TEMPLATE_OPTION_PATHS:
        raise ValueError(f"unknown auth e-mail kind {kind!r} (one of {AUTH_EMAIL_KINDS})")
    found: Any = collection.options
    for key in TEMPLATE_OPTION_PATHS[kind]:
        found = found.get(key) if isinstance(found, dict) else None
    default = DEFAULT_TEMPLATES[kind]
    if not isinstance(found, dict):
        return dict(default)
    subject, body = found.get("subject"), found.get("body")
    return {
        "subject": subject if isinstance(subject, str) and subject else default["subject"],
        "body": body if isinstance(body, str) and body else default["body"],
    }


def go_html_escape(text: str) -> str:
    """Go's `html.EscapeString`: `< > & ' "` as `&lt; &gt; &amp; &#39; &#34;`."""
    return (
        text.replace("&", "&amp;")
        .replace("'", "&#39;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&#34;")
    )


def _go_float(value: float) -> str:
    """Go's `strconv.FormatFloat(v, 'f', -1, 64)`: shortest digits, never an exponent."""
    if value != value or value in (float("inf"), float("-inf")):
        return {"nan": "NaN", "inf": "+Inf", "-inf": "-Inf"}[repr(value)]
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _go_json_number(value: float) -> str:
    """A number as Go's `encoding/json` writes a float64."""
    magnitude = abs(value)
    if magnitude == 0 or 1e-6 <= magnitude < 1e21:
        return _go_float(value)
    text = repr(value)
    return re.sub(r"e-0(\d)$", r"e-\1", text)


def _go_json(value: Any) -> str:
    """`value` as PocketBase stores a JSON field: compact, sorted keys, floats as Go writes
    them, `<>&` and U+2028 as they are (no HTML escaping)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_json_number(float(value))
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, dict):
        items = sorted((str(k), v) for k, v in value.items())
        return "{" + ",".join(f"{_go_json(k)}:{_go_json(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    return _go_json(str(value))


def _field_string(f: Field, value: Any) -> str:
    """The record's value as PocketBase's `record.GetString(name)` gives it."""
    if f.type == "json":
        return _go_json(value)
    if f.type == "geoPoint":
        point = value if isinstance(value, dict) else {}
        return f'{{"lon":{_go_json(point.get("lon", 0))},"lat":{_go_json(point.get("lat", 0))}}}'
    if isinstance(value, list | tuple | dict):
        return ""  # cast.ToString has no string for a slice (multi-value fields)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _go_float(float(value))
    return str(value)


def record_placeholders(collection: Collection, record: dict[str, Any]) -> dict[str, str]:
    """`{RECORD:name}` -> value for every non-hidden field (see the module docstring)."""
    placeholders: dict[str, str] = {}
    for f in collection.fields:
        if f.hidden:
            continue
        value = _field_string(f, record.get(f.name))
        placeholders["{RECORD:" + f.name + "}"] = (
            value if f.type in _NOT_ESCAPED else go_html_escape(value)
        )
    return placeholders


def resolve_template(template: dict[str, str], placeholders: dict[str, str]) -> tuple[str, str]:
    """`(subject, body)` of `template` with `placeholders` replaced in one pass."""
    if not placeholders:
        return template["subject"], template["body"]
    keys = sorted(placeholders, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(k) for k in keys))

    def replace(text: str) -> str:
        return pattern.sub(lambda found: placeholders[found.group(0)], text)

    return replace(template["subject"]), replace(template["body"])


def wrap_in_layout(body: str) -> str:
    """The HTML of a mail whose content is `body` (PocketBase's mail layout)."""
    return _LAYOUT_HEAD + body + _LAYOUT_TAIL


def render_auth_email(
    kind: AuthEmailKind,
    settings: dict[str, Any],
    collection: Collection,
    record: dict[str, Any],
    *,
    token: str = "",
    otp: str = "",
    otp_id: str = "",
    alert_info: str = "",
    new_email: str = "",
) -> Message:
    """The auth e-mail `kind` for `record` of `collection` (see the module docstring).

    `token` is required for verification, resetPassword and confirmEmailChange, `otp` for otp,
    `new_email` (the recipient) for confirmEmailChange; ValueError otherwise."""
    template = email_template(collection, kind)
    meta = settings.get("meta") or {}
    placeholders: dict[str, str] = {
        "{APP_NAME}": str(meta.get("appName") or ""),
        "{APP_URL}": str(meta.get("appURL") or ""),
    }
    if kind in _TOKEN_KINDS:
        if not token:
            raise ValueError(f"a {kind} e-mail needs a token")
        placeholders["{TOKEN}"] = token
    elif kind == "otp":
        if not otp:
            raise ValueError("an otp e-mail needs the one-time password")
        placeholders["{OTP}"] = otp
        placeholders["{OTP_ID}"] = otp_id
    else:
        placeholders["{ALERT_INFO}"] = go_html_escape(alert_info)
    for key, value in record_placeholders(collection, record).items():
        placeholders.setdefault(key, value)
    subject, body = resolve_template(template, placeholders)
    if kind == "confirmEmailChange":
        if not new_email:
            raise ValueError("a confirmEmailChange e-mail needs the new address")
        to = new_email
    else:
        to = str(record.get("email") or "")
    return Message(
        from_address=str(meta.get("senderAddress") or ""),
        from_name=str(meta.get("senderName") or ""),
        to=[(to, "")],
        subject=subject,
        html=wrap_in_layout(body),
        context={"kind": kind, "collection": collection, "record": record},
    )


# ------------------------------------------------------------------------------ the mailer
BeforeSend = Callable[[Message], Message | None]
OnSent = Callable[[Message], None]
OnFailed = Callable[[], None]


@dataclass(frozen=True)
class _Job:
    message: Message
    on_sent: OnSent | None = None
    on_failed: OnFailed | None = None


def _describe(message: Message) -> str:
    to = ", ".join(message.recipients()) or "(no recipient)"
    return f"to {to} (subject {message.subject!r})"


class Mailer:
    """Queued, retried delivery through the instance's SMTP settings (see the module doc)."""

    def __init__(
        self,
        settings_provider: Callable[[], dict[str, Any]],
        *,
        before_send: BeforeSend | None = None,
        attempts: int = 3,
        backoff: float = 1.0,
        timeout: float = DEFAULT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.before_send = before_send
        self._settings = settings_provider
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._ssl_context = ssl_context
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._unfinished = 0  # queued + being sent
        self._closed = False
        self._abandon = threading.Event()  # close() gave up: stop retrying, drop the rest
        self._worker: threading.Thread | None = None

    # -------------------------------------------------------------- public
    @property
    def pending(self) -> int:
        """Messages queued or being sent."""
        with self._cond:
            return self._unfinished

    def send(
        self,
        message: Message,
        *,
        on_sent: OnSent | None = None,
        on_failed: OnFailed | None = None,
    ) -> None:
        """Queue `message` and return at once; the worker sends it (errors are only logged)."""
        with self._cond:
            if self._closed:
                log.warning("mailer closed: mail %s dropped", _describe(message))
                return
            self._queue.append(_Job(message, on_sent, on_failed))
            self._unfinished += 1
            if self._worker is None:
                self._worker = threading.Thread(
                    target=self._run, name="instance_runtime.mail", daemon=True
                )
                self._worker.start()
            self._cond.notify_all()

    def send_now(self, message: Message) -> bool:
        """Send `message` in this thread, one attempt: True when sent, False when `before_send`
        dropped it; `MailerError` (`MailerDisabledError` with SMTP off) when not sent."""
        hook = self.before_send
        prepared = hook(message) if hook is not None else message
        if prepared is None:
            log.info("mail %s dropped by before_send", _describe(message))
            return False
        smtp = self._settings().get("smtp") or {}
        if not smtp.get("enabled"):
            raise MailerDisabledError()
        self._client(smtp).send(prepared)
        log.debug("mail sent %s", _describe(prepared))
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every queued message is handled; False if `timeout` ran out first."""
        with self._cond:
            return self._cond.wait_for(lambda: self._unfinished == 0, timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop accepting mail and drain the queue; True when everything queued was handled.

        After `timeout` seconds the rest is dropped (each logged) and retries stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            drained = self._cond.wait_for(lambda: self._unfinished == 0, timeout)
            worker = self._worker
            if not drained:
                self._abandon.set()
                while self._queue:
                    dropped = self._queue.popleft().message
                    self._unfinished -= 1
                    log.error("mailer closed before sending mail %s", _describe(dropped))
                self._cond.notify_all()
        if worker is not None and drained:
            worker.join(timeout=max(timeout, 0.1))  # it exits as soon as it sees the close
        return drained

    # -------------------------------------------------------------- worker
    def _client(self, smtp: dict[str, Any]) -> SmtpClient:
        config = SmtpConfig.from_settings(smtp)
        return SmtpClient(config, timeout=self._timeout, ssl_context=self._ssl_context)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queue) or self._closed)
                if not self._queue:
                    return
                job = self._queue.popleft()
            try:
                self._finish(job, self._deliver(job.message))
            except Exception:  # the worker must outlive any one message
                log.exception("mail %s not sent", _describe(job.message))
            finally:
                with self._cond:
                    self._unfinished -= 1
                    self._cond.notify_all()

    @staticmethod
    def _finish(job: _Job, outcome: Message | bool) -> None:
        """Tell the sender of `job` how it went (`_deliver`'s outcome)."""
        try:
            if isinstance(outcome, Message):
                if job.on_sent is not None:
                    job.on_sent(outcome)
            elif not outcome and job.on_failed is not None:
                job.on_failed()
        except Exception:
            log.exception("the after-send handler of mail %s failed", _describe(job.message))

    def _deliver(self, message: Message) -> Message | bool:
        """The message as delivered, True when `before_send` dropped it, False if not sent."""
        hook = self.before_send
        try:
            prepared = hook(message) if hook is not None else message
        except Exception:
            log.exception("before_send failed: mail %s dropped", _describe(message))
            return False
        if prepared is None:
            log.info("mail %s dropped by before_send", _describe(message))
            return True
        what = _describe(prepared)
        for attempt in range(1, self._attempts + 1):
            smtp = self._settings().get("smtp") or {}
            if not smtp.get("enabled"):
                log.info("SMTP is disabled: mail %s not sent", what)
                return False
            started = time.monotonic()
            try:
                self._client(smtp).send(prepared)
            except MailerError as exc:
                if not exc.transient or attempt == self._attempts:
                    log.error("mail %s not sent after %d attempt(s): %s", what, attempt, exc)
                    return False
                delay = self._backoff * 2 ** (attempt - 1)
                log.warning(
                    "mail %s: attempt %d of %d failed (%s); retrying in %.1fs",
                    what, attempt, self._attempts, exc, delay,
                )  # fmt: skip
                if self._abandon.wait(delay):
                    log.error("mailer closed before sending mail %s", what)
                    return False
                continue
            log.debug("mail sent %s in %.3fs", what, time.monotonic() - started)
            return prepared
        return False
