"""Superusers: auth-with-password, auth-refresh, tokens, and a password change revoking them."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import SUPERUSERS


@pytest.mark.parametrize("scenario", SUPERUSERS)
def test_superusers(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
