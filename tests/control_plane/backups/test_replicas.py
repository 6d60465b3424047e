"""Replica generations and restore drills through the real API: `pocketfleet serve` with real
PocketBase instances, Litestream, and moto's S3 server on loopback; old generations deleted from
a real local store."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import apsw
import pytest

from control_plane.backups.local_store import LocalStore
from control_plane.backups.replicas import delete_stale
from tests.control_plane.backups.conftest import Tenant, now, unique
from tests.support.s3 import FaultyLine, MotoServer, s3_env
from tests.support.server import ServeProcess, running_server

BUCKET = "pf-backups-replicas"


@pytest.fixture(scope="module")
def serve(moto: MotoServer, line: FaultyLine) -> Iterator[ServeProcess]:
    moto.create_bucket(BUCKET)
    env = s3_env(moto.port, BUCKET)
    env.update(PF_FIRST_ACCOUNT_IS_OPERATOR="true")
    with running_server(env=env) as server:
        yield server


def keys(moto: MotoServer, prefix: str) -> list[str]:
    listed = moto.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def drill(tenant: Tenant, name: str) -> dict[str, Any]:
    """Drill now (waiting out a background drill of the same instance)."""
    for _ in range(300):
        answer = tenant.api.post(f"/api/instances/{name}/backups/drill")
        if answer.status_code != 409 or "running" not in answer.text:
            break
        time.sleep(0.1)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def fleet_row(operator: Tenant, name: str) -> dict[str, Any]:
    rows = operator.api.get("/api/fleet/backups").json()
    return next(row for row in rows if row["name"] == name)


def test_a_restore_starts_a_new_generation_and_point_in_time_reaches_across_it(
    tenant: Tenant, moto: MotoServer
) -> None:
    notes = tenant.create(unique("gen")).setup()
    instance_id = tenant.instance(notes.name)["id"]
    notes.add("a")
    snap = tenant.snapshot(notes.name)
    notes.add("b")
    tenant.wait_replicated(notes.name, now())
    with_b = now()
    assert tenant.backups(notes.name)["replica_generation"] == 0

    tenant.restore(notes.name, snap["id"])
    assert notes.titles() == {"a"}
    assert tenant.backups(notes.name)["replica_generation"] == 1
    notes.add("c")
    tenant.wait_replicated(notes.name, now())
    with_c = now()
    assert keys(moto, f"replicas/{instance_id}/g1/data.db/")  # a separate line of replicas
    assert keys(moto, f"replicas/{instance_id}/data.db/")  # generation 0 is still there

    # before the restore: read from generation 0
    done = tenant.restore_to(notes.name, with_b)
    assert done["status"] == "done", done
    assert notes.titles() == {"a", "b"}
    # after it: generation 1, which began with the restored snapshot
    tenant.wait_replicated(notes.name, now())
    done = tenant.restore_to(notes.name, with_c)
    assert done["status"] == "done", done
    assert notes.titles() == {"a", "c"}
    body = tenant.backups(notes.name)
    assert body["replica_generation"] == 3
    assert datetime.fromisoformat(body["restorable_from"]) <= with_b


def test_a_drill_rebuilds_the_replica_and_checks_it(tenant: Tenant, operator: Tenant) -> None:
    notes = tenant.create(unique("drill")).setup()
    notes.add("x")
    tenant.wait_replicated(notes.name, now())
    result = drill(tenant, notes.name)
    assert result["status"] == "ok" and result["problem"] == "", result
    assert result["generation"] == 0 and result["seconds"] > 0
    assert tenant.backups(notes.name)["drill"]["status"] == "ok"
    assert fleet_row(operator, notes.name)["drill_status"] == "ok"
    assert tenant.instance(notes.name)["status"] == "running"  # never touched


def _as_owner(path: Path, owner: Path) -> None:
    """Give files the test process created beside a database back to the database's owner."""
    st = owner.stat()
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            os.chown(side, st.st_uid, st.st_gid)


def test_a_replica_that_rebuilds_a_corrupt_database_starts_a_new_generation(
    tenant: Tenant, operator: Tenant, serve: ServeProcess
) -> None:
    notes = tenant.create(unique("rot")).setup()
    instance_id = tenant.instance(notes.name)["id"]
    assert tenant.api.post(f"/api/instances/{notes.name}/stop").status_code == 200
    tenant.wait_status(notes.name, "stopped")
    db = serve.data_dir / "instances" / instance_id / "pb_data" / "data.db"
    # an index whose definition no longer matches its entries: SQLite keeps working, Litestream
    # replicates it faithfully, and `integrity_check` of any copy reports it. Written with
    # apsw: Python's sqlite3 may predate SQLite's fix of checkpoints racing Litestream's.
    conn = apsw.Connection(str(db))
    conn.execute("CREATE TABLE probe (a TEXT, b TEXT)")
    conn.execute("CREATE INDEX probe_a ON probe (a)")
    with conn:
        conn.executemany("INSERT INTO probe VALUES (?, ?)", [(f"a{i}", f"b{i}") for i in range(50)])
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute("UPDATE sqlite_schema SET sql = 'CREATE INDEX probe_a ON probe (b)' "
                 "WHERE name = 'probe_a'")  # fmt: skip
    conn.close()
    _as_owner(db, db)
    tenant.wait_replicated(notes.name, now())

    result = drill(tenant, notes.name)
    assert result["status"] == "corrupt", result
    assert "probe_a" in result["problem"] and result["generation"] == 0
    assert tenant.backups(notes.name)["replica_generation"] == 1
    row = fleet_row(operator, notes.name)
    assert row["drill_status"] == "corrupt" and "probe_a" in row["drill_problem"]

    # repaired, the new generation starts from a full snapshot of the sound database
    conn = apsw.Connection(str(db))
    conn.execute("REINDEX probe_a")
    conn.close()
    _as_owner(db, db)
    tenant.wait_replicated(notes.name, now())
    result = drill(tenant, notes.name)
    assert result["status"] == "ok" and result["generation"] == 1, result
    assert fleet_row(operator, notes.name)["drill_status"] == "ok"


def test_drill_refusals(tenant: Tenant, operator: Tenant) -> None:
    assert tenant.api.post("/api/instances/nosuchapp/backups/drill").status_code == 404
    theirs = operator.create(unique("theirs"))
    answer = tenant.api.post(f"/api/instances/{theirs.name}/backups/drill")
    assert answer.status_code == 404  # another account's instance does not exist for you
    anonymous = tenant.serve.client()
    assert anonymous.post(f"/api/instances/{theirs.name}/backups/drill").status_code == 401


def test_old_generations_leave_the_store_once_out_of_the_window(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    old = datetime.now(UTC) - timedelta(hours=30)
    for key, when in [
        ("replicas/i1/data.db/ltx/0/0000000000000001-0000000000000001.ltx", old),
        ("replicas/i1/g1/data.db/ltx/0/0000000000000001-0000000000000001.ltx", old),
        ("replicas/i1/g2/data.db/ltx/0/0000000000000001-0000000000000001.ltx", datetime.now(UTC)),
        ("replicas/i1/g3/data.db/ltx/0/0000000000000001-0000000000000001.ltx", old),
        ("replicas/i2/data.db/ltx/0/0000000000000001-0000000000000001.ltx", old),
    ]:
        path = tmp_path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"ltx")
        os.utime(path, (when.timestamp(), when.timestamp()))
    cutoff = datetime.now(UTC) - timedelta(hours=24)
    assert delete_stale(store, "i1", 3, cutoff) == [0, 1]
    left = sorted(o.key.split("/")[2] for o in store.list("replicas/"))
    # g2 is recent, g3 is current (however old), and another instance is not touched
    assert left == ["data.db", "g2", "g3"]
    assert store.list("replicas/i2/")
