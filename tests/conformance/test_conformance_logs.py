"""The request log through the JS SDK's LogService (`getList`, `getOne`, `getStats`) and
`DELETE /api/logs`, and the `settings.logs` options, each scenario on fresh engines of its own
(the log is instance-wide): entries written by the scenario's earlier requests, polled for
since both engines write their log in batches after the requests."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import LOGS


@pytest.mark.parametrize("scenario", LOGS)
def test_logs(isolated: Conformance, engine: str, scenario: str) -> None:
    isolated.check(scenario, engine)
