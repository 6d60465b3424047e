"""The app's cron jobs (PocketBase 0.40's system jobs on `app.Cron()`), and their start and stop.

Contract:

- `register_system_jobs(app)` adds PocketBase's system jobs to `app.cron`, in PocketBase's
  order (which is the order `GET /api/crons` lists them in):
  `__pbDBOptimize__` `0 0 * * *` (`optimize_databases`), `__pbMFACleanup__` `0 * * * *` and
  `__pbOTPCleanup__` `0 * * * *` (delete the expired `_mfas` / `_otps`), `__pbLogsCleanup__`
  `0 */6 * * *` (`core.logs.cleanup_logs`). A system job that fails logs a warning.
- `optimize_databases(app)`: `PRAGMA optimize` on the writer, then `PRAGMA
  wal_checkpoint(TRUNCATE)` of `data.db` and `auxiliary.db` (PocketBase checkpoints first; after
  ours the WAL holds nothing, not even what `optimize` wrote). The checkpoints are skipped when
  they are left to Litestream (`PF_CHECKPOINTS=external`, see `core.db`).
- `schedule_auto_backup(app, backup)` is the registration point of automatic backups
  (`__pbAutoBackup__`): the job runs `backup()` on `settings.backups.cron`, is (re)loaded now
  and after every settings change (added again, hence moved last, as PocketBase does), and is
  removed while that setting is empty. Nothing calls it until the runtime has backups.
- `RATE_LIMITERS_CLEANUP_JOB` (`2 * * * *`) is PocketBase's lazily added rate limiter sweep;
  not registered: `tools.rate_limit.RateLimiters` sweeps on its own.
- `bind(app)`: `register_system_jobs(app)`, then `app.cron` is started by `on_serve` (last,
  as PocketBase's `__pbCronStart__`, priority 999) and stopped by `on_terminate`. `on_serve`
  also runs the OTP and MFA cleanups once right away (not PocketBase's: a hibernating instance may
  sleep through every hour's :00; the log deletes its old entries when it opens).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

from instance_runtime.core import logs, mfa, otp
from instance_runtime.core.app import App
from instance_runtime.core.events import LifecycleEvent, SettingsReloadEvent
from instance_runtime.core.schema import Schema
from instance_runtime.tools.cron import CronError, JobFn

log = logging.getLogger("instance_runtime")

DB_OPTIMIZE_JOB = "__pbDBOptimize__"
DB_OPTIMIZE_CRON = "0 0 * * *"
MFA_CLEANUP_JOB = "__pbMFACleanup__"
OTP_CLEANUP_JOB = "__pbOTPCleanup__"
SESSIONS_CLEANUP_CRON = "0 * * * *"
AUTO_BACKUP_JOB = "__pbAutoBackup__"
RATE_LIMITERS_CLEANUP_JOB = "__pbRateLimitersCleanup__"
RATE_LIMITERS_CLEANUP_CRON = "2 * * * *"


def _checkpoint(path: Path) -> None:
    conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def optimize_databases(app: App) -> None:
    """See the module docstring (blocking: run it off the event loop)."""

    def optimize(conn: sqlite3.Connection, schema: Schema) -> None:
        conn.execute("PRAGMA optimize")

    try:
        app.write_sync(optimize)
    except sqlite3.Error as exc:
        log.warning("Failed to run periodic PRAGMA optimize: %s", exc)
    if not app.db.autocheckpoint:
        return
    for path, name in ((app.db.path, "main"), (app.data_dir / "auxiliary.db", "auxiliary")):
        if not path.exists():
            continue
        try:
            _checkpoint(path)
        except sqlite3.Error as exc:
            log.warning("Failed to run periodic PRAGMA wal_checkpoint for the %s DB: %s", name, exc)


def delete_expired_mfas(app: App) -> int:
    """`__pbMFACleanup__`: delete the expired `_mfas`; how many (blocking)."""
    try:
        return app.write_sync(mfa.delete_expired)
    except Exception as exc:
        log.warning("Failed to delete expired MFA sessions: %s", exc)
        return 0


def delete_expired_otps(app: App) -> int:
    """`__pbOTPCleanup__`: delete the expired `_otps`; how many (blocking)."""
    try:
        return app.write_sync(otp.delete_expired)
    except Exception as exc:
        log.warning("Failed to delete expired OTP sessions: %s", exc)
        return 0


def register_system_jobs(app: App) -> None:
    """See the module docstring. The place where the runtime's system jobs are added."""
    app.cron.add(DB_OPTIMIZE_JOB, DB_OPTIMIZE_CRON, lambda: optimize_databases(app))
    app.cron.add(MFA_CLEANUP_JOB, SESSIONS_CLEANUP_CRON, lambda: delete_expired_mfas(app))
    app.cron.add(OTP_CLEANUP_JOB, SESSIONS_CLEANUP_CRON, lambda: delete_expired_otps(app))
    app.cron.add(logs.LOGS_CLEANUP_JOB, logs.LOGS_CLEANUP_CRON, lambda: logs.cleanup_logs(app))


def schedule_auto_backup(app: App, backup: JobFn) -> None:
    """See the module docstring."""

    def load() -> None:
        expr = str((app.settings.current.get("backups") or {}).get("cron") or "")
        if not expr:
            app.cron.remove(AUTO_BACKUP_JOB)
            return
        try:
            app.cron.add(AUTO_BACKUP_JOB, expr, backup)
        except CronError as exc:  # the settings API refuses such a value; stored by hand?
            log.warning("Invalid backups cron expression %r: %s", expr, exc)
            app.cron.remove(AUTO_BACKUP_JOB)

    def reloaded(e: SettingsReloadEvent) -> Any:
        result = e.next()
        load()
        return result

    load()
    app.hooks.on_settings_reload.bind(reloaded, id="pfAutoBackupLoad")


def bind(app: App) -> None:
    """See the module docstring."""
    register_system_jobs(app)

    def start(e: LifecycleEvent) -> Any:
        app.cron.start()
        app.cron.run(MFA_CLEANUP_JOB)
        app.cron.run(OTP_CLEANUP_JOB)
        return e.next()

    def stop(e: LifecycleEvent) -> Any:
        app.cron.stop()
        return e.next()

    app.hooks.on_serve.bind(start, id="pfCronStart", priority=999)
    app.hooks.on_terminate.bind(stop, id="pfCronStop")
