"""E-mail auth: request/confirm verification, password reset and e-mail change, and the
settings' test e-mail, against both engines, each sending to a real SMTP server of its own
(harness.py's MailRelay); the scenarios read every token from the real messages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import AUTH_EMAIL


@pytest.fixture(scope="module")
def mail_conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    """Both engines, shared by this module's scenarios (each keeps to its own collections and
    points the engine's SMTP settings at the mail relay of its run)."""
    runs = Conformance(tmp_path_factory.mktemp("auth-email"), mail=True)
    try:
        yield runs
    finally:
        runs.stop()


@pytest.mark.parametrize("scenario", AUTH_EMAIL)
def test_auth_email(mail_conformance: Conformance, engine: str, scenario: str) -> None:
    mail_conformance.check(scenario, engine)
