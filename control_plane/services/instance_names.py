"""Instances named by credentials that open only some of them (SSH keys, deploy tokens).

- `own_instance_ids(db, account, names)`: the ids of the caller's live instances `names`, in
  order, once each; 422 (field `instances`) naming the first few that are not, in the same
  words for another account's instance as for none at all, so a name's existence does not
  leak. Operators too: their own only.
- `live_names(db, ids)`: id -> current name of those of `ids` still live (deleted ones are
  left out).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import col, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Instance
from control_plane.lifecycle import InstanceState
from control_plane.names import NAME_PATTERN
from control_plane.services.errors import Invalid

LIVE = col(Instance.status) != InstanceState.DELETED.value


async def own_instance_ids(db: SessionFactory, account: Account, names: Iterable[str]) -> list[str]:
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    async with db() as session:
        rows = (
            await session.exec(
                select(Instance.id, Instance.name).where(
                    col(Instance.name).in_(wanted), Instance.owner_id == account.id, LIVE
                )
            )
        ).all()
    ids = {name: instance_id for instance_id, name in rows}
    missing = [name for name in wanted if name not in ids]
    if missing:
        # named back only when it is an instance name at all (never an echo of input)
        shown = [repr(name) for name in missing[:3] if NAME_PATTERN.match(name)]
        raise Invalid(
            f"you have no instance named {', '.join(shown) or 'like that'}", field="instances"
        )
    return [ids[name] for name in wanted]


async def live_names(db: SessionFactory, ids: Iterable[str]) -> dict[str, str]:
    listed = set(ids)
    if not listed:
        return {}
    async with db() as session:
        found = (
            await session.exec(
                select(Instance.id, Instance.name).where(col(Instance.id).in_(listed), LIVE)
            )
        ).all()
    return {instance_id: name for instance_id, name in found if name is not None}
