"""The collection editor's helpers (`/api/collections/meta/scaffolds`, `.../oauth2-providers`,
`.../dry-run-view`) and the SQL console (`POST /api/sql`) through the JS SDK, side by side on
PocketBase and our runtime: same answers for superusers, 401/403 for guests and users, PocketBase's
400s for bad bodies and bad queries."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import COLLECTIONS_META


@pytest.mark.parametrize("scenario", COLLECTIONS_META)
def test_collections_meta(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
