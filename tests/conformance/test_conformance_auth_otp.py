"""OTP, MFA, impersonation and auth-methods against both engines: request-otp / auth-with-otp
(codes read from the real mails each engine sent to its own SMTP server, harness.py's
MailRelay), MFA's 401 `{mfaId}` and its second factor, the expiry of OTPs and MFA sessions, the
per-record OTP limiter, impersonation tokens, superuser OTP + MFA, and auth-methods' true state.
Each scenario runs on engines of its own (it changes the superusers or relies on fresh
limiters)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import AUTH_OTP


@pytest.fixture(scope="module")
def otp_conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    runs = Conformance(tmp_path_factory.mktemp("auth-otp"), isolated=True, mail=True)
    try:
        yield runs
    finally:
        runs.stop()


@pytest.mark.parametrize("scenario", AUTH_OTP)
def test_auth_otp(otp_conformance: Conformance, engine: str, scenario: str) -> None:
    otp_conformance.check(scenario, engine)
