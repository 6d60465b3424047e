"""API rules with anonymous requests: null, "", filters over the record, the body, the request
and other collections."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import RULES


@pytest.mark.parametrize("scenario", RULES)
def test_rules(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
