"""Records API (paging, sort, expand, fields, view, create from JSON and FormData, update
modifiers, delete with cascades, ids), through the JS SDK."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import RECORDS


@pytest.mark.parametrize("scenario", RECORDS)
def test_records(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
