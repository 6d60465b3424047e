"""Shapes of the backups API (`XPublic` out, requests in)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class SnapshotPublic(BaseModel):
    id: str
    status: str = Field(description="running, good or failed")
    size: int | None
    created: datetime
    finished: datetime | None = None
    trigger: str = Field(description="manual or scheduled")
    engine: str
    version: str
    sha256: str | None = None
    reason: str = ""


class SchedulePublic(BaseModel):
    schedule: str = Field(description="crontab (UTC), @hourly, @daily, @weekly or @every 6h")
    default: bool = Field(description="true when it is the fleet's default")
    next_run: datetime | None = None


class DrillPublic(BaseModel):
    """The last restore drill of an instance's replica (see `control_plane.backups.drills`)."""

    status: str = Field(description="ok, corrupt or error")
    problem: str = Field("", description="what failed, when not ok")
    at: datetime
    seconds: float | None = None
    generation: int = Field(description="the replica generation drilled")


class BackupsPublic(BaseModel):
    snapshots: list[SnapshotPublic]
    restorable_from: datetime | None = Field(
        None, description="earliest moment a point-in-time restore can go back to"
    )
    restorable_to: datetime | None = Field(
        None, description="latest moment replicated (now, when replication is caught up)"
    )
    schedule: SchedulePublic
    store: str = Field(description="s3 or local")
    replica_generation: int = Field(0, description="increases with every restore")
    drill: DrillPublic | None = Field(None, description="the last restore drill of the replica")


class ScheduleUpdate(BaseModel):
    schedule: str | None = Field(
        None,
        max_length=100,
        description=(
            "a 5-field crontab (UTC), @hourly, @daily, @weekly or @every 6h (also 90m, 1d, "
            "1h30m); an owner's fires at most every PF_BACKUP_MIN_INTERVAL_S (an hour by "
            "default). null: back to the fleet's default"
        ),
        # the shape, documented here; `backups.schedule.parse` checks the rest
        json_schema_extra={
            "pattern": r"^\s*(@(hourly|daily|weekly)|@every(\s*[0-9]+\s*[smhd])+"
            r"|\S+(\s+\S+){4})\s*$"
        },
    )


class RestoreAt(BaseModel):
    at: datetime = Field(description="ISO-8601 moment to restore the databases to")


class RestorePublic(BaseModel):
    id: str
    status: str
    phase: str
    snapshot_id: str | None
    point_in_time: datetime | None
    restored_to: datetime | None = Field(
        None,
        description="point in time: when, at the latest, the state rebuilt was replicated "
        "(at or before `point_in_time`; well before it when replication lagged then)",
    )
    reason: str
    safety_copy: str | None
    created: datetime
    finished: datetime | None


class FleetBackupPublic(BaseModel):
    instance_id: str
    name: str
    owner_email: str
    status: str
    schedule: str
    last_good_id: str | None
    last_good_at: datetime | None
    last_failure: str | None = Field(None, description="reason of a failure after the last good")
    replication_lag_s: float | None = Field(
        None, description="seconds since Litestream last confirmed the replica up to date"
    )
    overdue: bool
    next_run: datetime | None
    replica_generation: int = 0
    drill_status: str | None = Field(None, description="last restore drill: ok, corrupt, error")
    drill_at: datetime | None = None
    drill_problem: str = ""
