"""The tables of scheduled jobs and their runs.

`ScheduledJob`: an HTTP request the platform sends to an instance's own routes on a schedule
(through the proxy, so a sleeping instance wakes for it). Its headers and body are sealed at
rest (they often carry a secret) and never shown again. `anchored_at` is when its schedule was
set: `@every` schedules fire on a grid from there. `last_run_at`/`last_status` repeat the
newest run, for listings.

`JobRun`: one run of a job, newest kept per `PF_JOB_RUNS_KEEP`: when it started, its status
(the HTTP status as text, or `error` / `timeout`), how long it took over all its attempts, and
the first 4 KB of the answer. Runs go with their job; jobs go with their instance (the service
removes the jobs of a deleted instance; the foreign keys cascade should a row be removed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from control_plane.db.models import UTCDateTime, new_id, utcnow
from control_plane.db.sealed import SealedJSON

RESPONSE_KEPT_BYTES = 4096


def _when(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


def _now() -> Any:
    return Field(default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False))


class ScheduledJob(SQLModel, table=True):
    __tablename__ = "scheduled_job"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=15)
    instance_id: str = Field(
        foreign_key="instance.id", ondelete="CASCADE", index=True, max_length=15
    )
    schedule: str = Field(max_length=100)
    method: str = Field(max_length=8)
    path: str = Field(max_length=2048)
    # sealed at rest (control_plane/db/sealed.py): read and written as plain values
    headers: dict[str, str] = Field(
        default_factory=dict, sa_column=Column(SealedJSON(), nullable=False)
    )
    body: str | None = Field(default=None, sa_column=Column(SealedJSON(), nullable=True))
    timeout_s: int = 30
    paused: bool = False
    created_at: datetime = _now()
    updated_at: datetime = _now()
    anchored_at: datetime = _now()
    last_run_at: datetime | None = _when()
    last_status: str = Field(default="", max_length=16)


class JobRun(SQLModel, table=True):
    __tablename__ = "scheduled_job_run"
    __table_args__ = (sa.Index("ix_scheduled_job_run_job_id_id", "job_id", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(foreign_key="scheduled_job.id", ondelete="CASCADE", max_length=15)
    started_at: datetime = _now()
    status: str = Field(max_length=16)  # "200", ..., "error", "timeout"
    http_status: int | None = None
    duration_ms: int = 0
    attempts: int = 1
    response: str = Field(default="", sa_column=Column(sa.Text(), nullable=False))
    error: str = Field(default="", max_length=500)
