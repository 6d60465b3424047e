"""Settings: GET/PATCH /api/settings (secrets kept and never shown, PocketBase's validation) and
the rate limits `settings.rateLimits` drives, each scenario on fresh engines of its own."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import SETTINGS


@pytest.mark.parametrize("scenario", SETTINGS)
def test_settings(isolated: Conformance, engine: str, scenario: str) -> None:
    isolated.check(scenario, engine)
