"""The app's cron (`instance_runtime.core.crons`) on a real `App`: PocketBase's system jobs in
PocketBase's order, the scheduler started by `on_serve` and stopped by `on_terminate`, the DB
optimize job (and its respect for checkpoints left to Litestream), and the auto-backup job
following `settings.backups.cron`."""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from instance_runtime.core import crons
from instance_runtime.core.app import App
from instance_runtime.core.events import LifecycleEvent


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    runtime = App(tmp_path / "pb_data", readers=1)
    try:
        yield runtime
    finally:
        runtime.cron.stop()
        runtime.close()


def listing(app: App) -> list[tuple[str, str]]:
    return [(job.id, job.expression) for job in app.cron.jobs()]


def test_system_jobs_and_their_start_and_stop(app: App) -> None:
    crons.bind(app)
    assert listing(app) == [
        ("__pbDBOptimize__", "0 0 * * *"),
        ("__pbMFACleanup__", "0 * * * *"),
        ("__pbOTPCleanup__", "0 * * * *"),
        ("__pbLogsCleanup__", "0 */6 * * *"),
    ]
    assert not app.cron.has_started
    app.hooks.on_serve.trigger(LifecycleEvent(app), lambda e: None)
    assert app.cron.has_started
    app.hooks.on_terminate.trigger(LifecycleEvent(app), lambda e: None)
    assert not app.cron.has_started


def _grow_wal(app: App) -> Path:
    app.write_sync(lambda conn, schema: conn.execute("CREATE TABLE crons_t (x)"))
    app.write_sync(lambda conn, schema: conn.execute("INSERT INTO crons_t VALUES (1)"))
    wal = app.db.path.with_name("data.db-wal")
    assert wal.stat().st_size > 0
    return wal


def test_db_optimize_empties_the_wal(app: App) -> None:
    wal = _grow_wal(app)
    crons.optimize_databases(app)
    assert wal.stat().st_size == 0
    assert app.write_sync(lambda conn, schema: conn.execute("SELECT x FROM crons_t").fetchall())


def test_db_optimize_never_checkpoints_for_litestream(tmp_path: Path) -> None:
    app = App(tmp_path / "pb_data", readers=1, external_checkpoints=True)
    try:
        wal = _grow_wal(app)
        size = wal.stat().st_size
        crons.optimize_databases(app)
        assert wal.stat().st_size >= size  # a TRUNCATE checkpoint would have emptied it
    finally:
        app.close()


def test_auto_backup_follows_the_backups_cron_setting(app: App) -> None:
    crons.bind(app)
    ran = threading.Event()
    crons.schedule_auto_backup(app, ran.set)
    assert crons.AUTO_BACKUP_JOB not in dict(listing(app))  # no schedule by default

    def save(cron: str) -> None:
        values = copy.deepcopy(app.settings.current)
        values["backups"]["cron"] = cron
        values["backups"]["cronMaxKeep"] = 3
        asyncio.run(app.save_settings(values))

    save("@daily")
    assert listing(app)[-1] == ("__pbAutoBackup__", "0 0 * * *")
    assert app.cron.run("__pbAutoBackup__") and ran.wait(5)
    save("5 4 * * *")
    assert listing(app)[-1] == ("__pbAutoBackup__", "5 4 * * *")
    assert len(listing(app)) == 5
    save("")
    assert [job_id for job_id, _ in listing(app)] == [
        "__pbDBOptimize__", "__pbMFACleanup__", "__pbOTPCleanup__", "__pbLogsCleanup__",
    ]  # fmt: skip
