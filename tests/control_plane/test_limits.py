"""Effective per-instance limits (fleet defaults and operators' overrides) and the disk quota's
states and reasons — pure functions of a row and the settings."""

from __future__ import annotations

from pathlib import Path

from control_plane.db.models import Instance
from control_plane.engines.pocketbase import PocketBaseEngine
from control_plane.engines.registry import EngineRegistry
from control_plane.limits import (
    MB,
    DiskState,
    disk_limit_mb_of,
    disk_state,
    human_bytes,
    max_processes_of,
    over_quota_reason,
)
from control_plane.settings import Settings
from control_plane.specs import spec_for


def row(**fields: object) -> Instance:
    instance = Instance(name="app", owner_id="a", engine="pocketbase", version="0.40.6")
    instance.port = 20001
    for key, value in fields.items():
        setattr(instance, key, value)
    return instance


def test_overrides_win_over_the_fleet_defaults(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, instance_max_processes=256, instance_disk_limit_mb=1024)
    assert max_processes_of(settings, row()) == 256
    assert max_processes_of(settings, row(max_processes=64)) == 64
    assert disk_limit_mb_of(settings, row()) == 1024
    assert disk_limit_mb_of(settings, row(disk_limit_mb=10)) == 10
    assert disk_limit_mb_of(settings, row(disk_limit_mb=0)) is None  # none for this instance
    assert disk_limit_mb_of(Settings(data_dir=tmp_path, instance_disk_limit_mb=0), row()) is None


def test_the_driver_gets_the_instances_process_limit(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, instance_max_processes=300)
    engines = EngineRegistry([PocketBaseEngine(tmp_path / "engines", "0.40.6")])
    assert spec_for(settings, engines, row()).max_processes == 300
    assert spec_for(settings, engines, row(max_processes=32)).max_processes == 32


def test_disk_states_and_the_reason_of_a_stop(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, instance_disk_limit_mb=1024)
    gb = 1024 * MB
    assert disk_state(settings, row()) == DiskState.UNKNOWN
    assert disk_state(settings, row(disk_bytes=100 * MB, disk_complete=True)) == DiskState.OK
    near = row(disk_bytes=gb * 9 // 10 + 1, disk_complete=True)  # 90 %
    assert disk_state(settings, near) == DiskState.WARNING
    assert disk_state(settings, row(disk_bytes=gb, disk_complete=True)) == DiskState.WARNING
    over = row(disk_bytes=int(1.2 * gb), disk_complete=True)
    assert disk_state(settings, over) == DiskState.OVER
    assert over_quota_reason(settings, over) == "over its disk quota: 1.2 GB of 1 GB"
    assert over_quota_reason(settings, near) is None
    # no quota: never over
    assert disk_state(settings, row(disk_bytes=5 * gb, disk_limit_mb=0)) == DiskState.OK
    # a walk that stopped at its bounds counts as over, whatever it counted
    bounded = row(disk_bytes=MB, disk_complete=False)
    assert disk_state(settings, bounded) == DiskState.OVER
    reason = over_quota_reason(settings, bounded)
    assert reason is not None and reason.startswith("over its disk quota: more than 200000 files")


def test_sizes_for_people() -> None:
    assert [human_bytes(b) for b in (0, 512, 2048, 1536 * 1024, 1024 * MB, 1288490189)] == [
        "0 B",
        "512 B",
        "2 KB",
        "1.5 MB",
        "1 GB",
        "1.2 GB",
    ]
