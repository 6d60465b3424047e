"""Fixtures of the conformance suite: both engines per test module, and the engine under test.

Every scenario is a test per engine: ``[pocketbase]`` proves the scenario holds on the reference
(PocketBase answers as the scenario expects), ``[pocketfleet]`` that our runtime's trace equals
PocketBase's. To work on one scenario:

    .venv/bin/pytest tests/conformance -k "pocketfleet and records-expand"

A failure prints the differing steps as diffs of the normalised answers, and the paths of both
full traces and of the engine's log. The scenarios are in tests/js/conformance/*.mjs, listed by
module in scenarios.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conformance.harness import CANDIDATE, Conformance
from tests.support.engines import ENGINES, pocketfleet_runtime_available


@pytest.fixture(scope="module", params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == CANDIDATE and not pocketfleet_runtime_available():
        # TEMPORARY: goes away by itself once `pocketfleet runtime serve` exists (issue 3).
        pytest.skip("`pocketfleet runtime serve` does not exist yet")
    return name


@pytest.fixture(scope="module")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    """Both engines, shared by the module's scenarios (they keep apart by collection names)."""
    runs = Conformance(tmp_path_factory.mktemp("conformance"))
    try:
        yield runs
    finally:
        runs.stop()


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Conformance]:
    """Fresh engines for every scenario (for scenarios that change instance-wide state)."""
    runs = Conformance(tmp_path_factory.mktemp("isolated"), isolated=True)
    try:
        yield runs
    finally:
        runs.stop()
