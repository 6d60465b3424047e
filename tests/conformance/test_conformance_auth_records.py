"""Auth records through the records API: `manageRule` managers, the owner and guests changing
`email`, `verified` and passwords, as PocketBase allows and refuses them."""

from __future__ import annotations

import pytest

from tests.conformance.harness import Conformance
from tests.conformance.scenarios import AUTH_RECORDS


@pytest.mark.parametrize("scenario", AUTH_RECORDS)
def test_auth_records(conformance: Conformance, engine: str, scenario: str) -> None:
    conformance.check(scenario, engine)
