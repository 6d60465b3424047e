"""Operations on this machine's control plane without its API: used by `pocketfleet down` and
`pocketfleet operator ...` (they work whether or not `serve` runs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlmodel import col, select

from control_plane.db.engine import SessionFactory, create_engine, migrate, session_factory
from control_plane.db.models import Account, Instance
from control_plane.db.sealed import bind_keyring
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.registry import default_registry
from control_plane.lifecycle import InstanceState, transition
from control_plane.sealing import load_keyring
from control_plane.services.accounts import AccountService
from control_plane.settings import Settings
from control_plane.specs import spec_for


@asynccontextmanager
async def open_db(settings: Settings) -> AsyncIterator[SessionFactory]:
    url = settings.resolved_database_url
    keyring = load_keyring(settings)  # rows hold sealed values (control_plane.db.sealed)
    await migrate(url)
    engine = create_engine(url)
    bind_keyring(engine, keyring)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def stop_all_instances(settings: Settings) -> int:
    """Stop every running instance cleanly and record it as stopped (its desired state stays:
    the next `serve` starts it again). Returns how many were stopped."""
    engines = default_registry(settings)
    driver = ProcessDriver(settings)
    live = [InstanceState.RUNNING.value, InstanceState.PROVISIONING.value]
    stopped = 0
    async with open_db(settings) as db, db() as session:
        rows = (await session.exec(select(Instance).where(col(Instance.status).in_(live)))).all()
        for row in rows:
            if row.port is None:
                continue
            await driver.stop(spec_for(settings, engines, row), row.pid)
            row.pid = None
            transition(
                session,
                row,
                InstanceState.STOPPED,
                actor="cli:down",
                reason="pocketfleet down; starts again with the next serve",
            )
            stopped += 1
        await session.commit()
    return stopped


async def create_operator(settings: Settings, email: str, password: str) -> Account:
    async with open_db(settings) as db:
        return await AccountService(settings, db, lambda: None).create_operator(email, password)


async def make_operator(settings: Settings, email: str) -> Account:
    async with open_db(settings) as db:
        return await AccountService(settings, db, lambda: None).make_operator(email)
