"""Benchmark: backups of an instance with a large database under a steady write load.

    .venv/bin/python bench/backup.py [--size-mb 500] [--rate 50]

Starts moto's S3 server and `pocketfleet serve` (backups to that bucket) on loopback, creates a
PocketBase instance, grows its database to `--size-mb` MB (rows written with sqlite3 while the
instance is stopped), starts it, and keeps `--rate` record writes per second going through the
instance's API. Then it prints, in one run:
- snapshot throughput (MB of database per second of `POST .../backups`), next to the baseline
  of a plain file copy of the same database measured in this run;
- the longest write (latency) during the snapshot, next to the longest in the same time just
  before it (baseline);
- replication lag p50/p99 under the load (the operators' `replication_lag_s`, sampled);
- the time of a restore drill (the replica rebuilt into a scratch file and checked);
- the time to restore the snapshot, and a point-in-time restore to a moment before it, end to
  end (stopped, fetched, verified, swapped, running again), then a drill of the replica
  generation the restores started.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import apsw
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.s3 import MotoServer, s3_env  # noqa: E402
from tests.support.server import ServeProcess, scratch_dir, sign_up  # noqa: E402

EMAIL = "bench@example.com"
PASSWORD = "a-long-password"
ROW_BYTES = 3000  # with the other columns, one row fills most of a 4 KB page


class Writer(threading.Thread):
    """Writes `rate` records per second through the instance's API, timing each one."""

    def __init__(self, serve: ServeProcess, name: str, token: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.http = serve.instance_client(name)
        self.http.headers["Authorization"] = token
        self.period = 1.0 / rate
        self.samples: list[tuple[float, float]] = []  # (start, seconds)
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        body = "x" * 200
        next_at = time.monotonic()
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                answer = self.http.post(
                    "/api/collections/notes/records", json={"title": "w", "body": body}
                )
                if answer.status_code != 200:
                    self.errors += 1
            except httpx.HTTPError:
                self.errors += 1
            self.samples.append((start, time.monotonic() - start))
            next_at += self.period
            time.sleep(max(0.0, next_at - time.monotonic()))

    def longest(self, since: float, until: float) -> float:
        return max((d for s, d in self.samples if since <= s <= until), default=0.0)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def outcome(answer: httpx.Response, seconds: float) -> str:
    if answer.status_code == 200:
        return f"{seconds:.1f} s"
    return f"refused after {seconds:.1f} s: {answer.status_code} {answer.text[:300]}"


def drill(api: httpx.Client, name: str) -> str:
    """Rebuild the replica and check it (waiting out a drill the fleet's loop is running, or
    the first upload of a new replica generation)."""
    started = time.monotonic()
    while True:
        answer = api.post(f"/api/instances/{name}/backups/drill")
        if answer.status_code != 409 or time.monotonic() - started > 600:
            break
        time.sleep(1)
    if answer.status_code != 200:
        return f"refused: {answer.status_code} {answer.text[:300]}"
    body = answer.json()
    took = time.monotonic() - started
    return f"{body['status']} in {took:.1f} s {body['problem'][:300]}".rstrip()


def logical_size(conn: apsw.Connection) -> int:
    """The database's size in bytes, its pages in the WAL included."""
    return int(conn.execute("PRAGMA page_count").get) * int(conn.execute("PRAGMA page_size").get)


def fill(db: Path, size_mb: int) -> None:
    """Grow the `notes` table of a stopped instance's database until the file holds about
    `size_mb` MB (10^6 bytes), in transactions of 2,000 rows of about 3 KB (one per page).

    With apsw, whose SQLite is current: Litestream checkpoints this database meanwhile, and a
    SQLite before 3.51.3 (which Python's sqlite3 may be) can corrupt it by checkpointing too."""
    conn = apsw.Connection(str(db))
    conn.set_busy_timeout(120_000)

    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.000Z")
    i = 0
    while logical_size(conn) < size_mb * 1_000_000:
        batch = []
        for _ in range(2000):
            text = secrets.token_hex(ROW_BYTES // 4) + "." * (ROW_BYTES // 2)
            batch.append((f"f{i:014d}", f"fill {i}", text, now, now))
            i += 1
        with conn:
            conn.executemany("INSERT INTO notes VALUES (?, ?, ?, ?, ?)", batch)
    conn.close()


@contextmanager
def fleet(size_mb: int) -> Iterator[tuple[ServeProcess, MotoServer]]:
    root = scratch_dir("pf-bench-backup-")
    with MotoServer() as moto:
        moto.create_bucket("pf-bench")
        env = s3_env(moto.port, "pf-bench")
        env.update(
            PF_S3_PART_SIZE_MB="16", PF_S3_RETRY_ATTEMPTS="5", PF_FIRST_ACCOUNT_IS_OPERATOR="true"
        )
        serve = ServeProcess(root / "data", env=env)
        try:
            serve.start()
            yield serve, moto
        finally:
            serve.down()
            shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="writes per second")
    args = parser.parse_args()

    with fleet(args.size_mb) as (serve, _moto):
        api = serve.client()
        api.timeout = httpx.Timeout(900)
        api.headers["Authorization"] = f"Bearer {sign_up(api, EMAIL)}"
        name = "bigapp"
        assert (
            api.post(
                "/api/instances", json={"name": name, "superuser_password": PASSWORD}
            ).status_code
            == 201
        )
        while api.get(f"/api/instances/{name}").json()["status"] != "running":
            time.sleep(0.1)
        pb = serve.instance_client(name)
        token = pb.post(
            "/api/collections/_superusers/auth-with-password",
            json={"identity": EMAIL, "password": PASSWORD},
        ).json()["token"]
        created = pb.post(
            "/api/collections",
            headers={"Authorization": token},
            json={
                "name": "notes",
                "type": "base",
                "fields": [
                    {"name": "title", "type": "text"},
                    {"name": "body", "type": "text"},
                    {"name": "created", "type": "autodate", "onCreate": True},
                    {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
                ],
            },
        )
        assert created.status_code == 200, created.text
        instance_id = api.get(f"/api/instances/{name}").json()["id"]
        db = serve.data_dir / "instances" / instance_id / "pb_data" / "data.db"

        print(f"filling {db.name} to {args.size_mb} MB…", flush=True)
        api.post(f"/api/instances/{name}/stop")
        fill(db, args.size_mb)
        reader = apsw.Connection(str(db), flags=apsw.SQLITE_OPEN_READONLY)
        db_mb = logical_size(reader) / 1e6
        reader.close()
        started = time.monotonic()
        copy = Path(tempfile.mkdtemp(dir=serve.data_dir)) / "copy.db"
        for suffix in ("", "-wal"):  # the file copy of everything the database holds
            if db.with_name(db.name + suffix).exists():
                shutil.copyfile(db.with_name(db.name + suffix), copy.with_name(copy.name + suffix))
        copy_s = time.monotonic() - started
        shutil.rmtree(copy.parent)
        api.post(f"/api/instances/{name}/start")
        print("waiting for replication to ship the grown database…", flush=True)
        shipped_from = datetime.now(UTC)
        while True:
            to = api.get(f"/api/instances/{name}/backups").json()["restorable_to"]
            if to and datetime.fromisoformat(to) >= shipped_from:
                break
            time.sleep(1)

        writer = Writer(serve, name, token, args.rate)
        writer.start()
        lags: list[float] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                for row in api.get("/api/fleet/backups").json():
                    if row["name"] == name and row["replication_lag_s"] is not None:
                        lags.append(row["replication_lag_s"])
                time.sleep(0.1)

        sampling_thread = threading.Thread(target=sample, daemon=True)
        sampling_thread.start()
        time.sleep(10)  # baseline window under load
        before = time.monotonic()
        snap_start = time.monotonic()
        snap = api.post(f"/api/instances/{name}/backups")
        snap_s = time.monotonic() - snap_start
        assert snap.status_code == 201, snap.text
        time.sleep(5)
        sampling.set()
        sampling_thread.join()
        writer.stop.set()
        writer.join()
        stall = writer.longest(snap_start, snap_start + snap_s)
        baseline_stall = writer.longest(before - snap_s, before)

        at = datetime.now(UTC)
        time.sleep(1)
        archive_mb = snap.json()["size"] / 1e6
        print()
        print(f"database: {db_mb:.0f} MB; archive: {archive_mb:.0f} MB (tar.gz, level 1)")
        print(f"writes: {len(writer.samples)} at {args.rate:g}/s, {writer.errors} errors")
        print(
            f"snapshot: {snap_s:.1f} s = {db_mb / snap_s:.0f} MB/s of database "
            f"(baseline file copy: {db_mb / copy_s:.0f} MB/s; ratio {copy_s / snap_s:.2f})"
        )
        print(
            f"longest write during the snapshot: {stall * 1000:.0f} ms "
            f"(baseline, same length before it: {baseline_stall * 1000:.0f} ms)"
        )
        print(
            f"replication lag under load: p50 {pct(lags, 0.5):.2f} s, p99 {pct(lags, 0.99):.2f} s "
            f"({len(lags)} samples)"
        )
        print(f"restore drill of the replica: {drill(api, name)}", flush=True)
        # the restores come last and print what they got, refusals included
        restore_start = time.monotonic()
        done = api.post(f"/api/instances/{name}/backups/{snap.json()['id']}/restore")
        print(f"restore from the snapshot: {outcome(done, time.monotonic() - restore_start)}")
        pitr_start = time.monotonic()
        pitr = api.post(f"/api/instances/{name}/restore", json={"at": at.isoformat()})
        print(f"restore to a point in time: {outcome(pitr, time.monotonic() - pitr_start)}")
        if pitr.status_code == 200 and pitr.json().get("restored_to"):
            behind = at - datetime.fromisoformat(pitr.json()["restored_to"])
            print(f"  it rebuilt the state replicated {behind.total_seconds():.1f} s before `at`")
        generation = api.get(f"/api/instances/{name}/backups").json()["replica_generation"]
        while not api.get(f"/api/instances/{name}/backups").json()["restorable_to"]:
            time.sleep(1)
        print(f"restore drill of replica generation {generation}: {drill(api, name)}")
        print(f"(pid {os.getpid()} done)")


if __name__ == "__main__":
    main()
