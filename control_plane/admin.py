"""Operations on this machine's control plane without its API: used by `pocketfleet down` and
`pocketfleet operator ...` (they work whether or not `serve` runs)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import or_
from sqlmodel import col, select

from control_plane.db.engine import SessionFactory, create_engine, migrate, session_factory
from control_plane.db.models import Account, Instance
from control_plane.db.sealed import bind_keyring
from control_plane.drivers.factory import make_driver
from control_plane.engines.registry import default_registry
from control_plane.lifecycle import InstanceState, transition
from control_plane.sealing import load_keyring
from control_plane.services.accounts import AccountService
from control_plane.settings import Settings
from control_plane.specs import spec_for

STOP_CONCURRENCY = 32  # instances stopped at once by `pocketfleet down`


@asynccontextmanager
async def open_db(settings: Settings) -> AsyncIterator[SessionFactory]:
    url = settings.resolved_database_url
    keyring = load_keyring(settings)  # rows hold sealed values (control_plane.db.sealed)
    await migrate(url)
    engine = create_engine(url)
    bind_keyring(engine, keyring)
    db = session_factory(engine)
    try:
        yield db
    finally:
        await db.aclose()
        await engine.dispose()


async def stop_all_instances(settings: Settings, concurrency: int = STOP_CONCURRENCY) -> int:
    """Stop every instance that runs (or may: a recorded pid, whatever its status) cleanly,
    `concurrency` at a time, and record each as stopped (its desired state stays: the next
    `serve` starts it again). Returns how many were stopped.

    The rows are read first and written in one short transaction at the end: no transaction
    stays open while processes stop (each takes up to `PF_STOP_TIMEOUT_S`)."""
    engines = default_registry(settings)
    driver = make_driver(settings)
    live = [InstanceState.RUNNING.value, InstanceState.PROVISIONING.value]
    may_run = or_(col(Instance.status).in_(live), col(Instance.pid).is_not(None))
    slots = asyncio.Semaphore(max(1, concurrency))
    try:
        async with open_db(settings) as db:
            async with db() as session:
                query = select(Instance).where(
                    may_run, col(Instance.status) != InstanceState.DELETED.value
                )
                rows = (await session.exec(query)).all()

            async def stop(row: Instance) -> str | None:
                if row.port is None:
                    return None
                async with slots:
                    await driver.stop(spec_for(settings, engines, row), row.pid)
                return row.id

            stopped = {i for i in await asyncio.gather(*(stop(row) for row in rows)) if i}
            async with db() as session:
                for row in rows:
                    if row.id not in stopped:
                        continue
                    current = await session.get(Instance, row.id)
                    if current is None:
                        continue
                    current.pid = None
                    if current.status in live:
                        transition(
                            session,
                            current,
                            InstanceState.STOPPED,
                            actor="cli:down",
                            reason="pocketfleet down; starts again with the next serve",
                        )
                    session.add(current)
                await session.commit()
    finally:
        await driver.aclose()
    return len(stopped)


async def create_operator(settings: Settings, email: str, password: str) -> Account:
    async with open_db(settings) as db:
        return await AccountService(settings, db, lambda: None).create_operator(email, password)


async def make_operator(settings: Settings, email: str) -> Account:
    async with open_db(settings) as db:
        return await AccountService(settings, db, lambda: None).make_operator(email)
