"""The request log of `pocketbase` instances stays bounded and cheap to start with: the engine
writes a migration that lowers `logs.maxDays` to the fleet's bound and indexes `_logs.created`
(PocketBase deletes expired logs at every start; without the index that reads the whole log)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from control_plane.drivers.process import ProcessDriver
from control_plane.engines.base import InstanceLayout
from control_plane.engines.pocketbase import PocketBaseEngine, request_log_migration_name
from tests.control_plane.conftest import SpecFactory


def engine_with_bound(pb_engine: PocketBaseEngine, max_days: int) -> PocketBaseEngine:
    return PocketBaseEngine(pb_engine.root.parent, pb_engine.default_version(), max_days)


def query(database: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(database) as connection:
        return connection.execute(sql).fetchall()


async def test_the_bound_and_the_index_are_applied_at_the_first_start(
    proc_driver: ProcessDriver, make_spec: SpecFactory, pb_engine: PocketBaseEngine
) -> None:
    spec = make_spec(engine=engine_with_bound(pb_engine, 2))
    await proc_driver.stop(spec, await proc_driver.start(spec))

    assert [p.name for p in spec.layout.migrations_dir.iterdir()] == [request_log_migration_name(2)]
    data = spec.layout.data_dir
    (settings,) = query(data / "data.db", "SELECT value FROM _params WHERE id = 'settings'")[0]
    assert isinstance(settings, (str, bytes))
    assert json.loads(settings)["logs"]["maxDays"] == 2
    indexes = query(data / "auxiliary.db", "SELECT name FROM sqlite_master WHERE type='index'")
    assert ("idx_pocketfleet_logs_created",) in indexes


async def test_a_new_bound_replaces_the_old_migration_and_never_raises_a_lower_setting(
    proc_driver: ProcessDriver, make_spec: SpecFactory, pb_engine: PocketBaseEngine
) -> None:
    spec = make_spec(engine=engine_with_bound(pb_engine, 1))
    await proc_driver.stop(spec, await proc_driver.start(spec))
    spec = make_spec(engine=engine_with_bound(pb_engine, 3), id=spec.id, layout=spec.layout)
    await proc_driver.stop(spec, await proc_driver.start(spec))

    assert [p.name for p in spec.layout.migrations_dir.iterdir()] == [request_log_migration_name(3)]
    (settings,) = query(
        spec.layout.data_dir / "data.db", "SELECT value FROM _params WHERE id = 'settings'"
    )[0]
    assert isinstance(settings, (str, bytes))
    assert json.loads(settings)["logs"]["maxDays"] == 1  # a bound lowers, never raises


def test_a_tenant_s_links_never_make_root_write_or_delete_elsewhere(
    pb_engine: PocketBaseEngine, tmp_path: Path
) -> None:
    engine = engine_with_bound(pb_engine, 2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    victim = elsewhere / "passwd"
    victim.write_text("root:x:0:0\n")
    planted = elsewhere / f"9_{request_log_migration_name(1)}"  # matches the old-migration glob
    planted.write_text("not ours")
    layout = InstanceLayout(tmp_path / "instance")
    layout.root.mkdir()
    # the folder itself is a link: refused
    layout.migrations_dir.symlink_to(elsewhere)
    with pytest.raises(OSError):
        engine.prepare(engine.default_version(), layout)
    # links inside the folder: only the links themselves are touched
    layout.migrations_dir.unlink()
    layout.migrations_dir.mkdir()
    name = request_log_migration_name(2)
    (layout.migrations_dir / f".{name}.{os.getpid()}.tmp").symlink_to(victim)
    (layout.migrations_dir / planted.name).symlink_to(planted)

    written = engine.prepare(engine.default_version(), layout)

    assert written == [layout.migrations_dir / name]
    assert victim.read_text() == "root:x:0:0\n" and planted.read_text() == "not ours"
    assert sorted(p.name for p in layout.migrations_dir.iterdir()) == [name]
    assert not (layout.migrations_dir / name).is_symlink()
