"""Cron jobs through the JS SDK's CronService (`getFullList`, `run`) on fresh engines of their
own: a fresh instance lists PocketBase's system jobs (same ids, expressions and order), only
superusers see or run them, each one runs on demand, an unknown one is PocketBase's 404."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import CRONS


@pytest.mark.parametrize("scenario", CRONS)
def test_crons(isolated: Conformance, engine: str, scenario: str) -> None:
    isolated.check(scenario, engine)
