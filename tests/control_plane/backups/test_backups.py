"""Backups through the real API: `pocketfleet serve` with real PocketBase instances, Litestream,
and moto's S3 server on loopback (behind a line that the outage test cuts). The last tests
restart the control plane (cleanly, then with `kill -9`)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import tarfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.control_plane.backups.conftest import Notes, Tenant, now, parse_time, plant, unique
from tests.support.s3 import FaultyLine, MotoServer, s3_env
from tests.support.server import ServeProcess, running_server

BUCKET = "pf-backups-a"


@pytest.fixture(scope="module")
def serve(moto: MotoServer, line: FaultyLine) -> Iterator[ServeProcess]:
    moto.create_bucket(BUCKET)
    env = s3_env(line.port, BUCKET)
    env.update(
        PF_FIRST_ACCOUNT_IS_OPERATOR="true",
        PF_BACKUP_KEEP_LAST="2",
        PF_BACKUP_KEEP_DAILY="1",
        PF_BACKUP_KEEP_WEEKLY="1",
        PF_BACKUP_KEEP_MONTHLY="1",
    )
    with running_server(env=env) as server:
        yield server


def keys(moto: MotoServer, prefix: str) -> list[str]:
    listed = moto.client().list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in listed.get("Contents", [])]


def test_a_manual_snapshot_is_uploaded_verified_and_listed(
    tenant: Tenant, moto: MotoServer
) -> None:
    notes = tenant.create(unique("snap")).setup()
    notes.add("first", "hello")
    snap = tenant.snapshot(notes.name)
    assert snap["size"] > 0 and snap["trigger"] == "manual" and snap["engine"] == "pocketbase"
    listed = tenant.backups(notes.name)
    assert [s["id"] for s in listed["snapshots"]] == [snap["id"]]
    assert listed["store"] == "s3"
    instance_id = tenant.instance(notes.name)["id"]
    stored = keys(moto, f"backups/{instance_id}/")
    assert len(stored) == 1 and stored[0].endswith(f"{snap['id']}.tar.gz")

    download = tenant.api.get(f"/api/instances/{notes.name}/backups/{snap['id']}/download")
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == snap["sha256"]
    with tarfile.open(fileobj=io.BytesIO(download.content), mode="r:gz") as tar:
        manifest = json.loads(tar.extractfile("MANIFEST.json").read())  # type: ignore[union-attr]
        assert manifest["engine"] == {"name": "pocketbase", "version": snap["version"]}
        assert "pb_data/data.db" in manifest["databases"]
        for entry in manifest["files"]:
            content = tar.extractfile(entry["path"]).read()  # type: ignore[union-attr]
            assert hashlib.sha256(content).hexdigest() == entry["sha256"]


def test_restore_takes_a_changed_instance_back_to_its_snapshot(
    tenant: Tenant, serve: ServeProcess
) -> None:
    notes = tenant.create(unique("back")).setup()
    first = notes.add("a", "one")
    notes.add("b", "two")
    snap = tenant.snapshot(notes.name)
    notes.add("c", "three")
    notes.remove(first)
    assert notes.titles() == {"b", "c"}

    done = tenant.restore(notes.name, snap["id"])
    assert tenant.instance(notes.name)["status"] == "running"
    assert notes.all() == {"a": "one", "b": "two"}
    assert done["safety_copy"] and Path(done["safety_copy"]).is_dir()


def test_point_in_time_restore_lands_between_two_writes(tenant: Tenant) -> None:
    notes = tenant.create(unique("pitr")).setup()
    adding = now()
    notes.add("before")
    tenant.wait_replicated(notes.name, now())
    between = now()
    notes.add("after")
    tenant.wait_replicated(notes.name, now())
    assert notes.titles() == {"before", "after"}

    done = tenant.restore_to(notes.name, between)
    assert done["status"] == "done", done
    assert notes.titles() == {"before"}
    # the moment rebuilt: the write of "before" was replicated by then (the replica's
    # timestamps are whole seconds)
    restored_to = parse_time(done["restored_to"])
    assert restored_to is not None
    assert adding - timedelta(seconds=1) <= restored_to <= between


def test_a_corrupted_archive_is_refused_and_the_instance_left_as_it_was(
    tenant: Tenant, moto: MotoServer
) -> None:
    notes = tenant.create(unique("bad")).setup()
    notes.add("kept")
    snap = tenant.snapshot(notes.name)
    notes.add("newer")
    instance_id = tenant.instance(notes.name)["id"]
    (key,) = keys(moto, f"backups/{instance_id}/")
    body = bytearray(moto.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    moto.client().put_object(Bucket=BUCKET, Key=key, Body=bytes(body))

    answer = tenant.api.post(f"/api/instances/{notes.name}/backups/{snap['id']}/restore")
    assert answer.status_code == 422, answer.text
    assert "checksum" in answer.json()["detail"]
    tenant.wait_status(notes.name, "running")
    assert notes.titles() == {"kept", "newer"}


def test_a_snapshot_while_writes_run_loses_and_tears_nothing(tenant: Tenant) -> None:
    notes = tenant.create(unique("busy")).setup()
    stop = threading.Event()
    written: list[int] = []
    payload = {i: hashlib.sha256(str(i).encode()).hexdigest() * 8 for i in range(100_000)}

    def writer() -> None:
        writer_notes = Notes(tenant.serve, notes.name, notes.email)
        i = 0
        while not stop.is_set() and i < 5000:
            writer_notes.add(f"n{i:05d}", payload[i])
            written.append(i)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while len(written) < 20:
            time.sleep(0.01)
        snap = tenant.snapshot(notes.name)
        count_at_snapshot_end = len(written)
    finally:
        stop.set()
        thread.join()
    tenant.restore(notes.name, snap["id"])
    restored = notes.all()
    numbers = sorted(int(title[1:]) for title in restored)
    assert numbers == list(range(len(numbers)))  # a prefix: nothing lost before the cut
    assert 20 <= len(numbers) <= count_at_snapshot_end + 1
    assert all(restored[f"n{i:05d}"] == payload[i] for i in numbers)  # nothing torn


def test_retention_keeps_the_newest_and_deletes_the_pruned_objects(
    tenant: Tenant, moto: MotoServer
) -> None:
    notes = tenant.create(unique("keep")).setup()
    ids = []
    for i in range(4):
        notes.add(f"r{i}")
        ids.append(tenant.snapshot(notes.name)["id"])
    listed = [s["id"] for s in tenant.backups(notes.name)["snapshots"]]
    assert listed == [ids[3], ids[2]]
    instance_id = tenant.instance(notes.name)["id"]
    assert sorted(k.rsplit("-", 1)[1] for k in keys(moto, f"backups/{instance_id}/")) == sorted(
        f"{i}.tar.gz" for i in ids[2:]
    )


def test_a_hibernated_instance_is_replicated_and_snapshotted_without_waking(
    tenant: Tenant,
) -> None:
    notes = tenant.create(unique("sleep")).setup()
    notes.add("awake")
    asleep = tenant.api.post(f"/api/instances/{notes.name}/hibernate")
    assert asleep.status_code == 200, asleep.text
    tenant.wait_status(notes.name, "hibernated")
    during_sleep = now()
    tenant.wait_replicated(notes.name, during_sleep)
    snap = tenant.snapshot(notes.name)
    assert tenant.instance(notes.name)["status"] == "hibernated"  # not woken

    notes.add("woken")  # the request wakes it
    # the advertised end: a later moment may hold writes not shipped yet (the request log's)
    done = tenant.restore_to(notes.name, tenant.wait_replicated(notes.name, now()))
    assert done["status"] == "done", done
    assert notes.titles() == {"awake", "woken"}
    assert snap["status"] == "good"


def test_s3_failing_mid_upload_fails_the_snapshot_then_all_catches_up(
    tenant: Tenant, moto: MotoServer, line: FaultyLine, serve: ServeProcess
) -> None:
    notes = tenant.create(unique("outage")).setup()
    notes.add("before")
    instance = tenant.instance(notes.name)
    root = serve.data_dir / "instances" / instance["id"]
    plant(root, "pb_data/storage/big.bin", os.urandom(12 * 1024 * 1024))  # 3 parts of 5 MB

    line.cut_after(7 * 1024 * 1024)
    try:
        failed = tenant.api.post(f"/api/instances/{notes.name}/backups")
        assert failed.status_code == 502, failed.text
        listed = tenant.backups(notes.name)["snapshots"]
        assert [s["status"] for s in listed] == ["failed"]
        assert "S3" in listed[0]["reason"]
        failed_id = listed[0]["id"]
        base = f"/api/instances/{notes.name}/backups/{failed_id}"
        assert tenant.api.post(f"{base}/restore").status_code == 409
        assert tenant.api.get(f"{base}/download").status_code == 409
        notes.add("during")  # written while the store is unreachable
        written = now()
    finally:
        line.restore()

    good = tenant.snapshot(notes.name)
    statuses = {s["id"]: s["status"] for s in tenant.backups(notes.name)["snapshots"]}
    assert statuses[good["id"]] == "good" and sorted(statuses.values()) == ["failed", "good"]
    assert moto.pending_uploads(BUCKET) == []  # the broken multipart upload was aborted
    tenant.wait_replicated(notes.name, written)


def test_refusals(tenant: Tenant, serve: ServeProcess) -> None:
    notes = tenant.create(unique("no")).setup()
    base = f"/api/instances/{notes.name}"
    api = tenant.api
    snap = tenant.snapshot(notes.name)

    assert api.get("/api/instances/nosuch/backups").status_code == 404
    assert api.post("/api/instances/nosuch/backups").status_code == 404
    assert api.get(f"{base}/backups/nosuch/download").status_code == 404
    assert api.post(f"{base}/backups/nosuch/restore").status_code == 404
    assert api.delete(f"{base}/backups/nosuch").status_code == 404

    stranger = Tenant(serve)
    assert stranger.api.get(f"{base}/backups").status_code == 404
    assert stranger.api.post(f"{base}/backups/{snap['id']}/restore").status_code == 404
    assert stranger.api.get("/api/fleet/backups").status_code == 403
    assert serve.client().get(f"{base}/backups").status_code == 401

    newest = api.delete(f"{base}/backups/{snap['id']}")
    assert newest.status_code == 409 and "force" in newest.json()["detail"]

    tenant.wait_replicated(notes.name, now())  # a window to be outside of
    for at in ("2000-01-01T00:00:00Z", "2999-01-01T00:00:00Z"):
        refused = api.post(f"{base}/restore", json={"at": at})
        assert refused.status_code == 422, refused.text
    assert api.post(f"{base}/restore", json={"at": "yesterday"}).status_code == 422

    for schedule in ("every day", "61 * * * *", "@every 5m"):
        refused = api.put(f"{base}/backups/schedule", json={"schedule": schedule})
        assert refused.status_code == 422, refused.text
    accepted = api.put(f"{base}/backups/schedule", json={"schedule": "@every 6h"})
    assert accepted.status_code == 200 and accepted.json()["default"] is False

    forced = api.delete(f"{base}/backups/{snap['id']}", params={"force": "true"})
    assert forced.status_code == 204
    assert tenant.backups(notes.name)["snapshots"] == []


def scheduled(tenant: Tenant, name: str, after: datetime | None = None) -> list[dict[str, Any]]:
    return [
        s
        for s in tenant.backups(name)["snapshots"]
        if s["trigger"] == "scheduled"
        and s["status"] == "good"
        and (after is None or datetime.fromisoformat(s["created"]) > after)
    ]


def eventually(check: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def next_run(tenant: Tenant, name: str) -> datetime | None:
    answer = tenant.api.get(f"/api/instances/{name}/backups/schedule")
    assert answer.status_code == 200, answer.text
    return parse_time(answer.json()["next_run"])


def test_schedules_run_survive_a_restart_and_skip_unchanged_instances(
    operator: Tenant, serve: ServeProcess
) -> None:
    notes = operator.create(unique("sched")).setup()
    notes.add("one")
    set_ = operator.api.put(
        f"/api/instances/{notes.name}/backups/schedule", json={"schedule": "@every 1s"}
    )
    assert set_.status_code == 200, set_.text  # operators may go below the tenant minimum
    eventually(lambda: len(scheduled(operator, notes.name)) >= 1)

    asleep = operator.api.post(f"/api/instances/{notes.name}/hibernate")
    assert asleep.status_code == 200, asleep.text
    operator.wait_status(notes.name, "hibernated")
    mark = now()
    runs: set[datetime] = set()

    def three_runs_seen() -> bool:
        run = next_run(operator, notes.name)
        if run is not None:
            runs.add(run)
        return len(runs) >= 3  # at least two runs since `mark`

    eventually(three_runs_seen)
    assert len(scheduled(operator, notes.name, after=mark)) <= 1  # unchanged: skipped
    assert operator.instance(notes.name)["status"] == "hibernated"  # never woken

    serve.stop()
    serve.start()
    schedule = operator.api.get(f"/api/instances/{notes.name}/backups/schedule").json()
    assert schedule["schedule"] == "@every 1s" and schedule["default"] is False
    restarted = now()
    notes.add("two")  # wakes it and changes it
    eventually(lambda: len(scheduled(operator, notes.name, after=restarted)) >= 1)

    rows = {r["name"]: r for r in operator.api.get("/api/fleet/backups").json()}
    row = rows[notes.name]
    assert row["last_good_id"] is not None and row["overdue"] is False
    assert row["schedule"] == "@every 1s"


def test_kill_9_during_a_restore_leaves_the_instance_restorable(
    operator: Tenant, serve: ServeProcess
) -> None:
    notes = operator.create(unique("crash")).setup()
    notes.add("kept")
    instance_id = operator.instance(notes.name)["id"]
    storage = serve.data_dir / "instances" / instance_id / "pb_data" / "storage"
    plant(storage.parent.parent, "pb_data/storage/big.bin", os.urandom(8 * 1024 * 1024))
    snap = operator.snapshot(notes.name)
    notes.add("later")

    def restore() -> None:
        with contextlib.suppress(httpx.HTTPError):
            operator.api.post(f"/api/instances/{notes.name}/backups/{snap['id']}/restore")

    thread = threading.Thread(target=restore)
    thread.start()
    eventually(lambda: "restore:" in operator.instance(notes.name)["status_reason"])
    busy = operator.api.post(f"/api/instances/{notes.name}/backups")
    assert busy.status_code == 409, busy.text
    serve.stop(signal.SIGKILL)
    thread.join()

    serve.start()
    operator.wait_status(notes.name, "running")
    assert notes.titles() in ({"kept"}, {"kept", "later"})  # the old folder or the new one
    operator.restore(notes.name, snap["id"])
    assert notes.titles() == {"kept"}
    assert (storage / "big.bin").stat().st_size == 8 * 1024 * 1024
