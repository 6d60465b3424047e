"""View collections' fields as PocketBase infers them from the view query (joins, aliases,
aggregates, casts, subqueries, unions, json, comments, quoted identifiers, relations, files, an
auth collection's system fields; the queries it refuses and its messages), dry-run and saved,
and a view's fields across updates, through the JS SDK on PocketBase and our runtime."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import VIEWS


@pytest.mark.parametrize("scenario", VIEWS)
def test_views(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
