"""The filter language: operators, any-of forms, logic, literals, date macros, @request.*,
@collection.*, modifiers, relations and back-relations, JSON paths, geoDistance, refusals."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import FILTERS


@pytest.mark.parametrize("scenario", FILTERS)
def test_filters(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
