"""Fixtures for engine and driver tests: the real PocketBase binary, real child processes.

Everything lives under one folder in /tmp whose ancestors are traversable (pytest's own tmp
folders are 0700, which instance users could not enter). Every process a test starts through
`proc_driver` is stopped when the test ends.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from control_plane.drivers.base import InstanceSpec
from control_plane.drivers.ports import free_port
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.base import InstanceLayout
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.settings import DEFAULT_POCKETBASE_VERSION, Settings

_ids = itertools.count(1)
_ports_handed_out: set[int] = set()

SpecFactory = Callable[..., InstanceSpec]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "network: downloads from PyPI (reachable here and in CI)")


@pytest.fixture(scope="session")
def fleet_root() -> Iterator[Path]:
    """A 0755 folder in /tmp for every engine and instance folder of the session."""
    root = Path(tempfile.mkdtemp(prefix="pf-cp-tests-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pb_engine(fleet_root: Path) -> PocketBaseEngine:
    """The PocketBase engine with the bundled binary installed (once per session)."""
    engine = PocketBaseEngine(fleet_root / "engines", DEFAULT_POCKETBASE_VERSION)
    assert engine.ensure_bundled()
    return engine


@pytest.fixture
def driver_settings(fleet_root: Path) -> Settings:
    data_dir = fleet_root / f"data{next(_ids)}"
    return Settings(data_dir=data_dir, start_timeout_s=20.0, stop_timeout_s=5.0)


@pytest.fixture
async def proc_driver(driver_settings: Settings) -> AsyncIterator[ProcessDriver]:
    driver = ProcessDriver(driver_settings)
    yield driver
    await driver.aclose()


@pytest.fixture
async def make_spec(
    driver_settings: Settings, pb_engine: PocketBaseEngine
) -> AsyncIterator[SpecFactory]:
    """Build specs of fresh instances (own id, folder, port); stops all of them afterwards."""
    made: list[InstanceSpec] = []

    def make(**overrides: Any) -> InstanceSpec:
        number = next(_ids)
        instance_id = f"t{number:06d}{os.getpid() % 100000:05d}"
        port = free_port(driver_settings, _ports_handed_out)
        _ports_handed_out.add(port)
        spec = InstanceSpec(
            id=instance_id,
            name=f"inst{number}",
            engine=pb_engine,
            version=pb_engine.default_version(),
            layout=InstanceLayout(driver_settings.instances_dir.absolute() / instance_id),
            port=port,
        )
        spec = dataclasses.replace(spec, **overrides)
        made.append(spec)
        return spec

    yield make
    cleaner = ProcessDriver(driver_settings)
    for spec in made:
        await cleaner.stop(spec, None)
    await cleaner.aclose()
