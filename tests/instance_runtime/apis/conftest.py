"""One runtime process per test module (see tests/instance_runtime/runtime_process.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.instance_runtime.runtime_process import RuntimeProcess


@pytest.fixture(scope="module")
def runtime() -> Iterator[RuntimeProcess]:
    with RuntimeProcess.started() as process:
        yield process
