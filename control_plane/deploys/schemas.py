"""What the API shows of a deploy."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from control_plane.deploys.manifest import DeployManifest, Plan
from control_plane.deploys.models import Deploy


class DeployPlanCreate(DeployManifest):
    """The files a deploy would make live (path -> sha256), for `POST .../deploys/plan`."""

    keep: bool = Field(False, description="the deploy keeps the live files it does not name")


class DeployPlanPublic(BaseModel):
    """What to send: the contents the instance lacks; and what the deploy would change."""

    missing: list[str]  # sha256 of the contents to send in the archive
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: int

    @classmethod
    def of(cls, plan: Plan) -> DeployPlanPublic:
        return cls(
            missing=plan.missing,
            added=plan.added,
            changed=plan.changed,
            removed=plan.removed,
            unchanged=plan.unchanged,
        )


class DeployPublic(BaseModel):
    id: str
    created: datetime
    finished: datetime | None
    actor: str
    status: str  # running, done, failed
    keep: bool
    rollback_of: str | None
    file_count: int
    bytes: int
    sha256: str  # of the archive kept for rollback
    manifest: dict[str, str]  # relative path -> sha256 of its content
    started: bool  # whether the instance was started on it (False: stopped or hibernated)
    can_roll_back: bool  # its content is still kept
    message: str
    log: str  # the instance's log from the deploy on

    @classmethod
    def of(cls, row: Deploy) -> DeployPublic:
        return cls(
            id=row.id,
            created=row.created_at,
            finished=row.finished_at,
            actor=row.actor,
            status=row.status,
            keep=row.keep,
            rollback_of=row.rollback_of,
            file_count=row.file_count,
            bytes=row.total_bytes,
            sha256=row.sha256,
            manifest={str(k): str(v) for k, v in row.manifest.items()},
            started=row.started,
            can_roll_back=row.archived and row.status == "done",
            message=row.message,
            log=row.log,
        )
