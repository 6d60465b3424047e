"""Collections API (list, view, create with every field type, views, update of the schema
keeping data, delete, truncate, import, indexes, system protections), through the JS SDK."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import COLLECTIONS


@pytest.mark.parametrize("scenario", COLLECTIONS)
def test_collections(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
