"""`Mailer.send(message, on_sent=..., on_failed=...)` against the real SMTP server of
tests/support/smtp.py: the sender learns, in the worker, what was delivered (after
`before_send` changed it) or that nothing was (SMTP off, a server that stays down); a message a
hook dropped calls neither, and a failing callback does not stop the worker."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from instance_runtime.core.mails import Mailer
from instance_runtime.tools.mailer import Message
from tests.support.ports import free_port
from tests.support.smtp import SmtpServer


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


def message(to: str, subject: str) -> Message:
    return Message(
        from_address="support@example.com", to=[(to, "")], subject=subject, html="<p>hi</p>"
    )


class Outcomes:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str, str]] = []
        self.failed: list[str] = []
        self.done = threading.Semaphore(0)

    def on_sent(self, label: str) -> Any:
        def call(delivered: Message) -> None:
            self.sent.append((label, delivered.to[0][0], delivered.subject))
            self.done.release()

        return call

    def on_failed(self, label: str) -> Any:
        def call() -> None:
            self.failed.append(label)
            self.done.release()

        return call


def test_the_sender_learns_what_was_delivered(smtp: SmtpServer) -> None:
    def before_send(m: Message) -> Message | None:
        if m.subject == "drop":
            return None
        m.to = [("redirected@example.com", "")]
        return m

    settings = {"smtp": smtp.pocketbase_settings()["smtp"]}
    mailer = Mailer(lambda: settings, before_send=before_send)
    seen = Outcomes()
    mailer.send(message("ann@example.com", "drop"), on_sent=seen.on_sent("a"))
    mailer.send(
        message("ann@example.com", "keep"), on_sent=seen.on_sent("b"), on_failed=seen.on_failed("b")
    )
    assert mailer.close(10)
    assert seen.sent == [("b", "redirected@example.com", "keep")]
    assert seen.failed == []
    assert smtp.wait_for(to="redirected@example.com").subject == "keep"


def test_the_sender_learns_that_nothing_was_delivered() -> None:
    seen = Outcomes()
    off = {"smtp": {"enabled": False}}
    off_mailer = Mailer(lambda: off)
    off_mailer.send(
        message("ann@example.com", "off"),
        on_sent=seen.on_sent("off"),
        on_failed=seen.on_failed("off"),
    )
    down = {"smtp": {"enabled": True, "host": "127.0.0.1", "port": free_port(), "tls": False}}
    mailer = Mailer(lambda: down, backoff=0.01, attempts=2)
    mailer.send(
        message("ann@example.com", "down"),
        on_sent=seen.on_sent("down"),
        on_failed=seen.on_failed("down"),
    )
    assert seen.done.acquire(timeout=30) and seen.done.acquire(timeout=30)
    assert sorted(seen.failed) == ["down", "off"]
    assert seen.sent == []
    assert mailer.close(10) and off_mailer.close(10)


def test_a_failing_callback_does_not_stop_the_worker(smtp: SmtpServer) -> None:
    settings = {"smtp": smtp.pocketbase_settings()["smtp"]}
    mailer = Mailer(lambda: settings)
    seen = Outcomes()

    def boom(delivered: Message) -> None:
        raise RuntimeError("callback failed")

    mailer.send(message("cb@example.com", "first"), on_sent=boom)
    mailer.send(message("cb@example.com", "second"), on_sent=seen.on_sent("second"))
    assert mailer.close(10)
    assert seen.sent == [("second", "cb@example.com", "second")]
