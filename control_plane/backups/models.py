"""Tables of the backups concept: snapshots, restores, and per-instance backup state.

- `BackupSnapshot`: one archive of an instance. `status` moves `running -> good | failed`; a
  snapshot is `good` only once its upload is complete and the stored object's size and checksum
  were verified. A failed one keeps its `reason`; `upload_id` names an S3 multipart upload that
  may still need aborting (cleared once aborted or completed).
- `BackupRestore`: one restore (from a snapshot, or to a point in time). While `status` is
  `running`, the instance's `hold` names it and the reconciler keeps the instance stopped;
  `phase` and the on-disk journal let a restarted control plane finish or undo it.
- `BackupState`: per instance, the schedule chosen by its owner (None: the fleet default),
  what the scheduler last saw (fingerprint of the folder, time of the last check), the
  current replica generation (see `generations`), and the outcome of the last restore drill
  of its replica (see `drills`): `drill_status` is `ok`, `corrupt` (the replica rebuilt a
  database that fails its integrity check) or `error` (the drill could not run to the end).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Column, Field, SQLModel

from control_plane.db.models import UTCDateTime, new_id, utcnow


def _when(nullable: bool = True) -> Any:
    return Field(default=None, sa_column=Column(UTCDateTime(), nullable=nullable))


class BackupSnapshot(SQLModel, table=True):
    __tablename__ = "backup_snapshot"
    __table_args__ = (sa.Index("ix_backup_snapshot_instance_created", "instance_id", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True, max_length=15)
    instance_id: str = Field(foreign_key="instance.id", max_length=15)
    status: str = Field(default="running", max_length=16, index=True)
    trigger: str = Field(default="manual", max_length=16)  # manual | scheduled
    actor: str = Field(default="", max_length=64)
    key: str = Field(default="", max_length=512)
    size: int | None = Field(default=None, sa_type=sa.BigInteger)
    sha256: str | None = Field(default=None, max_length=64)
    upload_id: str | None = Field(default=None, max_length=1024)
    fingerprint: str | None = Field(default=None, max_length=64)
    engine: str = Field(default="", max_length=32)
    version: str = Field(default="", max_length=32)
    reason: str = Field(default="", max_length=2000)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    finished_at: datetime | None = _when()


class BackupRestore(SQLModel, table=True):
    __tablename__ = "backup_restore"

    id: str = Field(default_factory=new_id, primary_key=True, max_length=15)
    instance_id: str = Field(foreign_key="instance.id", index=True, max_length=15)
    snapshot_id: str | None = Field(default=None, max_length=15)
    point_in_time: datetime | None = _when()
    restored_to: datetime | None = _when()  # point in time: when the rebuilt state was written
    status: str = Field(default="running", max_length=16, index=True)  # running | done | failed
    phase: str = Field(default="stopping", max_length=16)
    actor: str = Field(default="", max_length=64)
    reason: str = Field(default="", max_length=2000)
    safety_copy: str | None = Field(default=None, max_length=1024)
    created_at: datetime = Field(
        default_factory=utcnow, sa_column=Column(UTCDateTime(), nullable=False)
    )
    finished_at: datetime | None = _when()


class BackupState(SQLModel, table=True):
    __tablename__ = "backup_state"

    instance_id: str = Field(foreign_key="instance.id", primary_key=True, max_length=15)
    schedule: str | None = Field(default=None, max_length=100)
    last_fingerprint: str | None = Field(default=None, max_length=64)
    last_checked_at: datetime | None = _when()
    replica_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    drill_at: datetime | None = _when()
    drill_status: str | None = Field(default=None, max_length=16)
    drill_problem: str = Field(default="", max_length=2000, sa_column_kwargs={"server_default": ""})
    drill_generation: int | None = None
    drill_seconds: float | None = None
