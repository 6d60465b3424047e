"""What the control plane hands a driver for an instance: the environment it adds."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.db.models import Instance
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.engines.pocketfleet import PocketfleetEngine
from control_plane.engines.registry import EngineRegistry
from control_plane.settings import Settings
from control_plane.specs import CHECKPOINTS_ENV, spec_for


@pytest.mark.parametrize(
    ("engine", "replication", "leaves_them"),
    [("pocketfleet", True, True), ("pocketfleet", False, False), ("pocketbase", True, False)],
)
def test_engines_on_an_old_sqlite_leave_checkpoints_to_litestream(
    tmp_path: Path, engine: str, replication: bool, leaves_them: bool
) -> None:
    settings = Settings(data_dir=tmp_path, replication=replication)
    engines = EngineRegistry(
        [PocketBaseEngine(tmp_path / "engines", "0.40.6"), PocketfleetEngine()]
    )
    version = "0.40.6" if engine == "pocketbase" else engines.get(engine).default_version()
    row = Instance(name="app", owner_id="a", engine=engine, version=version, port=20001)
    row.env = {"GREETING": "hello"}
    spec = spec_for(settings, engines, row)
    assert spec.env == {"GREETING": "hello"}  # the tenant's own, apart from the platform's
    assert (spec.platform_env.get(CHECKPOINTS_ENV) == "external") is leaves_them
