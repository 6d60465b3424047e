"""File fields (multipart uploads through the SDK) and GET /api/files downloads."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import FILES


@pytest.mark.parametrize("scenario", FILES)
def test_files(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
