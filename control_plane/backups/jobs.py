"""Entry points of persistent scheduler jobs (referenced by name, so they survive restarts).

APScheduler stores a job as `"control_plane.backups.jobs:scheduled_snapshot"` plus its
arguments; the running control plane registers its `BackupService` here at start.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from control_plane.backups.service import BackupService

log = logging.getLogger(__name__)

SNAPSHOT_JOB = "control_plane.backups.jobs:scheduled_snapshot"
_service: BackupService | None = None


def register(service: BackupService | None) -> None:
    global _service
    _service = service


async def scheduled_snapshot(instance_id: str) -> None:
    """The scheduled snapshot of one instance (never raises: failures are recorded)."""
    if _service is None:
        log.warning("scheduled snapshot of %s skipped: backups are not running", instance_id)
        return
    try:
        await _service.run_scheduled(instance_id)
    except Exception:
        log.exception("scheduled snapshot of %s failed", instance_id)
