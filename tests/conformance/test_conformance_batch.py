"""Batch API (pb.createBatch()): all or nothing, and its limits."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import BATCH


@pytest.mark.parametrize("scenario", BATCH)
def test_batch(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
