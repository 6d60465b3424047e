"""An instance's deploys as its pages show them: the `_deploys.html` section of the instance
page (the newest `SHOWN`) and the page of one deploy (`deploy.html`).

A deploy is "current" when it is the newest good one (`done`): the content the instance serves
(unless its files were edited since). Rolling back to it would change nothing, so only the
other deploys whose content is still kept offer "Roll back to this". Who made a deploy is
shown as "you", "the owner" or "an operator" (the row's actor, `account:ID`, on hover).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fastapi import Request

from control_plane.db.models import Account
from control_plane.deploys.models import Deploy
from control_plane.deploys.schemas import DeployPublic
from control_plane.services.instances import actor_of
from dashboard.web import cp_of

SHOWN = 10  # deploys listed on the instance page
SHA_SHOWN = 12  # hex digits of a file's sha256 in the manifest
# the pill (`.pill-*` of the stylesheet) of each status
PILLS = {"done": "running", "running": "provisioning", "failed": "failed"}
CLI_LINE = "pocketfleet deploy NAME DIR"


@dataclass(frozen=True)
class ManifestEntry:
    path: str
    sha256: str

    @property
    def short(self) -> str:
        return self.sha256[:SHA_SHOWN]


@dataclass(frozen=True)
class DeployView:
    id: str
    created: datetime
    finished: datetime | None
    actor: str  # as recorded: `account:ID`, `operator:ID`
    who: str  # as people read it
    status: str
    started: bool
    keep: bool
    rollback_of: str | None
    file_count: int
    bytes: int
    sha256: str
    message: str
    log: str
    manifest: tuple[ManifestEntry, ...]
    can_roll_back: bool  # its content is still kept
    current: bool  # the newest good deploy

    @property
    def pill(self) -> str:
        return PILLS.get(self.status, "deleting")

    @property
    def not_started(self) -> bool:
        """Finished without the instance being started on it (it was stopped or hibernated,
        or could not be held)."""
        return not self.started and self.status != "running"

    @property
    def rollback_offered(self) -> bool:
        return self.can_roll_back and not self.current


def current_of(rows: Sequence[Deploy]) -> str | None:
    """The id of the newest good deploy of `rows` (newest first), None without one."""
    return next((row.id for row in rows if row.status == "done"), None)


def who_of(actor: str, viewer: Account, owner_id: str) -> str:
    """The deploy's `actor` as the `viewer` of the instance (owned by `owner_id`) reads it."""
    if actor == actor_of(viewer):
        return "you"
    if actor == f"account:{owner_id}":
        return "the owner"
    if actor.startswith("operator:"):
        return "an operator"
    return actor


def deploy_view(row: Deploy, current: str | None, viewer: Account, owner_id: str) -> DeployView:
    public = DeployPublic.of(row)  # the API's reading of the row (can_roll_back, manifest)
    return DeployView(
        id=public.id,
        created=public.created,
        finished=public.finished,
        actor=public.actor,
        who=who_of(public.actor, viewer, owner_id),
        status=public.status,
        started=public.started,
        keep=public.keep,
        rollback_of=public.rollback_of,
        file_count=public.file_count,
        bytes=public.bytes,
        sha256=public.sha256,
        message=public.message,
        log=public.log,
        manifest=tuple(ManifestEntry(path, sha) for path, sha in sorted(public.manifest.items())),
        can_roll_back=public.can_roll_back,
        current=public.id == current,
    )


async def deploy_views(request: Request, account: Account, name: str) -> dict[str, Any]:
    """`deploys` (the newest `SHOWN`), `total` (all of them) and the CLI line, for the page."""
    cp = cp_of(request)
    owner_id = (await cp.instances.get(account, name)).owner_id
    rows = await cp.deploys.history(account, name)
    current = current_of(rows)
    return {
        "deploys": [deploy_view(row, current, account, owner_id) for row in rows[:SHOWN]],
        "total": len(rows),
        "cli": CLI_LINE.replace("NAME", name),
    }


async def one_deploy(request: Request, account: Account, name: str, deploy_id: str) -> DeployView:
    """The deploy `deploy_id` of the instance `name` (`NotFound` for another instance's)."""
    cp = cp_of(request)
    owner_id = (await cp.instances.get(account, name)).owner_id
    row = await cp.deploys.get(account, name, deploy_id)
    current = current_of(await cp.deploys.history(account, name))
    return deploy_view(row, current, account, owner_id)
