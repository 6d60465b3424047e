"""Realtime (/api/realtime over SSE) through the JS SDK: rules evaluated per subscriber, expand
and fields per topic, unsubscribe, and the refusals of POST /api/realtime."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import REALTIME


@pytest.mark.parametrize("scenario", REALTIME)
def test_realtime(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
