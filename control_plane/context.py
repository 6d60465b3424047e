"""The assembled control plane: settings, database, engines, driver, routes, reconciler and
the services over them. Built once by `pocketfleet serve` (or a test), closed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.db.engine import SessionFactory, create_engine, migrate, session_factory
from control_plane.drivers.base import Driver
from control_plane.drivers.process import ProcessDriver
from control_plane.engines.registry import EngineRegistry, default_registry
from control_plane.reconcile import Reconciler
from control_plane.services.accounts import AccountService
from control_plane.services.auth import AuthService
from control_plane.services.engines import EngineService
from control_plane.services.instances import InstanceService
from control_plane.settings import Settings
from proxy.activity import ActivityTracker
from proxy.routes import RouteTable


@dataclass
class ControlPlane:
    settings: Settings
    engine: AsyncEngine
    db: SessionFactory
    engines: EngineRegistry
    driver: Driver
    routes: RouteTable
    activity: ActivityTracker
    reconciler: Reconciler
    accounts: AccountService
    auth: AuthService
    instances: InstanceService
    engine_admin: EngineService
    _loop_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        routes: RouteTable | None = None,
        activity: ActivityTracker | None = None,
    ) -> ControlPlane:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        settings.instances_dir.mkdir(mode=0o711, exist_ok=True)
        url = settings.resolved_database_url
        await migrate(url)
        engine = create_engine(url)
        db = session_factory(engine)
        engines = await asyncio.to_thread(default_registry, settings)
        driver = ProcessDriver(settings)
        routes = routes if routes is not None else RouteTable()
        activity = activity if activity is not None else ActivityTracker()
        reconciler = Reconciler(settings, db, engines, driver, routes, activity)
        return cls(
            settings=settings,
            engine=engine,
            db=db,
            engines=engines,
            driver=driver,
            routes=routes,
            activity=activity,
            reconciler=reconciler,
            accounts=AccountService(settings, db, reconciler.nudge),
            auth=AuthService(settings, db),
            instances=InstanceService(settings, db, engines, driver, reconciler),
            engine_admin=EngineService(engines),
        )

    def start_reconciling(self) -> None:
        self._loop_task = asyncio.create_task(self.reconciler.run(), name="reconcile")

    async def close(self) -> None:
        """Stop reconciling and close the database. Instances keep running on purpose."""
        await self.reconciler.close()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self.driver.aclose()
        await self.engine.dispose()
