"""When a replica is due for a restore drill (the drills themselves run against the real
store in `test_replicas.py`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from control_plane.backups.drills import is_due
from control_plane.backups.models import BackupState
from control_plane.db.models import Instance

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
DAY = timedelta(hours=24)


def instance(status: str = "running", asleep_h: float | None = None) -> Instance:
    row = Instance(name="app", owner_id="a", engine="pocketbase", version="0.30.0")
    row.status = status
    row.hibernated_at = NOW - timedelta(hours=asleep_h) if asleep_h is not None else None
    return row


def drilled(
    hours_ago: float, status: str = "ok", generation: int = 0, current: int = 0
) -> BackupState:
    return BackupState(
        instance_id="i",
        replica_generation=current,
        drill_at=NOW - timedelta(hours=hours_ago),
        drill_status=status,
        drill_generation=generation,
    )


def test_never_drilled_or_failed_to_run_is_due() -> None:
    assert is_due(instance(), None, DAY, NOW)
    assert is_due(instance(), BackupState(instance_id="i"), DAY, NOW)
    assert is_due(instance(), drilled(1, status="error"), DAY, NOW)


def test_a_running_instance_is_drilled_once_per_interval() -> None:
    assert not is_due(instance(), drilled(23), DAY, NOW)
    assert is_due(instance(), drilled(24), DAY, NOW)
    assert is_due(instance(), drilled(30, status="corrupt"), DAY, NOW)


def test_a_new_generation_is_drilled_at_once() -> None:
    assert is_due(instance(), drilled(1, generation=0, current=1), DAY, NOW)
    assert not is_due(instance(), drilled(1, generation=1, current=1), DAY, NOW)


def test_a_sleeping_instance_whose_replica_passed_since_it_fell_asleep_is_left_alone() -> None:
    assert not is_due(instance("hibernated", asleep_h=50), drilled(40), DAY, NOW)
    # asleep, but it wrote after the last drill: drilled once more
    assert is_due(instance("hibernated", asleep_h=30), drilled(40), DAY, NOW)
    # a corrupt verdict or a new generation is never left alone
    assert is_due(instance("hibernated", asleep_h=50), drilled(40, status="corrupt"), DAY, NOW)
    assert is_due(instance("hibernated", asleep_h=50), drilled(40, current=1), DAY, NOW)
