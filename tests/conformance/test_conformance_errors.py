"""Errors: their shape, malformed bodies, the body limit, unknown routes."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import ERRORS


@pytest.mark.parametrize("scenario", ERRORS)
def test_errors(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
