"""Scenarios that change instance-wide state (import with deleteMissing, batch settings), each
on fresh engines of its own."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import ISOLATED


@pytest.mark.parametrize("scenario", ISOLATED)
def test_isolated(isolated: Conformance, engine: str, scenario: str) -> None:
    isolated.check(scenario, engine)
