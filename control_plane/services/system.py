"""The machine as operators see it: disk, memory, and instances by state."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass

import psutil
from sqlmodel import col, func, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Instance
from control_plane.lifecycle import InstanceState
from control_plane.settings import Settings


@dataclass(frozen=True)
class SystemHealth:
    disk_total: int
    disk_free: int
    memory_total: int
    memory_available: int
    instances_memory: int
    by_state: dict[str, int]
    accounts: int
    suspended_accounts: int

    @property
    def running(self) -> int:
        return self.by_state.get(InstanceState.RUNNING.value, 0)

    @property
    def asleep(self) -> int:
        return self.by_state.get(InstanceState.HIBERNATED.value, 0)


class SystemService:
    def __init__(self, settings: Settings, db: SessionFactory) -> None:
        self.settings = settings
        self.db = db

    async def health(self) -> SystemHealth:
        disk = await asyncio.to_thread(shutil.disk_usage, self.settings.data_dir)
        memory = psutil.virtual_memory()
        async with self.db() as session:
            counts = await session.exec(
                select(Instance.status, func.count())
                .where(col(Instance.status) != InstanceState.DELETED.value)
                .group_by(col(Instance.status))
            )
            by_state = {status: count for status, count in counts.all()}
            used = (
                await session.exec(
                    select(func.coalesce(func.sum(Instance.memory_bytes), 0)).where(
                        col(Instance.status) != InstanceState.DELETED.value
                    )
                )
            ).one()
            accounts = (await session.exec(select(func.count()).select_from(Account))).one()
            suspended = (
                await session.exec(
                    select(func.count())
                    .select_from(Account)
                    .where(col(Account.suspended_at).is_not(None))
                )
            ).one()
        return SystemHealth(
            disk_total=disk.total,
            disk_free=disk.free,
            memory_total=memory.total,
            memory_available=memory.available,
            instances_memory=int(used or 0),
            by_state=by_state,
            accounts=accounts,
            suspended_accounts=suspended,
        )
