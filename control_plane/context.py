"""The assembled control plane: settings, database, engines, driver, routes, reconciler and
the services over them. Built once by `pocketfleet serve` (or a test), closed on shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from control_plane.activity_reports import ActivityReceiver
from control_plane.backups.service import BackupService
from control_plane.caddy_frontend import CaddyFrontend
from control_plane.data_dir import secure_data_dir
from control_plane.db.engine import SessionFactory, create_engine, migrate, session_factory
from control_plane.db.models import Instance
from control_plane.db.sealed import bind_keyring, seal_in_place
from control_plane.deploys.service import DeployService
from control_plane.domains.service import DomainService
from control_plane.domains.verification import StaticResolver, SystemResolver, Verifier
from control_plane.drivers.base import Driver
from control_plane.drivers.factory import make_driver
from control_plane.engines.registry import EngineRegistry, default_registry
from control_plane.files.service import FileService
from control_plane.jobs.service import JobService
from control_plane.reconcile import Reconciler
from control_plane.scheduler import Scheduler
from control_plane.sealing import load_keyring
from control_plane.services.accounts import AccountService
from control_plane.services.admin_access import AdminAccessService
from control_plane.services.auth import AuthService
from control_plane.services.engines import EngineService
from control_plane.services.hibernation import HibernationService
from control_plane.services.instances import InstanceService
from control_plane.services.metrics import MetricsService
from control_plane.services.moves import MoveService
from control_plane.services.system import SystemService
from control_plane.settings import Settings
from control_plane.sftp.host_key import load_host_key
from control_plane.sftp.service import SshKeyService
from proxy.activity import ActivityTracker
from proxy.handoff import HandoffStore
from proxy.routes import RouteSink, RouteTable

log = logging.getLogger(__name__)


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
    admin_access: AdminAccessService
    metrics: MetricsService
    system: SystemService
    hibernation: HibernationService
    backups: BackupService
    domains: DomainService
    files: FileService
    deploys: DeployService
    jobs: JobService
    ssh_keys: SshKeyService
    caddy: CaddyFrontend | None = None  # with PF_PROXY=caddy
    activity_reports: ActivityReceiver | None = field(default=None, repr=False)
    scheduler: Scheduler = field(default_factory=Scheduler, repr=False)
    _loop_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _backups_task: asyncio.Task[None] | None = field(default=None, repr=False)
    _jobs_task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        routes: RouteTable | None = None,
        activity: ActivityTracker | None = None,
        handoffs: HandoffStore | None = None,
    ) -> ControlPlane:
        await asyncio.to_thread(secure_data_dir, settings.data_dir)
        url = settings.resolved_database_url
        keyring = await asyncio.to_thread(load_keyring, settings)
        await migrate(url)
        engine = create_engine(url)
        bind_keyring(engine, keyring)  # secrets at rest (env values, pending superusers)
        if sealed := await seal_in_place(engine):
            log.info("sealed %d secrets stored in clear or under an old key", sealed)
        db = session_factory(engine)
        engines = await asyncio.to_thread(default_registry, settings)
        driver = make_driver(settings)
        routes = routes if routes is not None else RouteTable()
        activity = activity if activity is not None else ActivityTracker()
        caddy = CaddyFrontend(settings, routes, activity) if settings.proxy == "caddy" else None
        sink: RouteSink = caddy.sink if caddy is not None else routes
        reconciler = Reconciler(settings, db, engines, driver, sink, activity)
        instances = InstanceService(settings, db, engines, driver, reconciler)
        domains = DomainService(
            settings,
            db,
            instances,
            Verifier(
                StaticResolver(settings.domain_resolve, SystemResolver()),
                _verification_port(settings),
                allow_http=settings.domain_http_verification,
            ),
            caddy.routes if caddy is not None else None,
        )
        if caddy is not None:
            await caddy.open(await domains.aliases_by_host())
        handoffs = handoffs if handoffs is not None else HandoffStore()
        backups = BackupService(settings, db, engines, instances, reconciler)
        reconciler.hibernator.replication = backups.pauses  # sleep and wake pause replication
        files = FileService(settings, instances)
        deploys = DeployService(settings, files)
        await deploys.recover()  # deploys a stopped control plane left half done
        await MoveService(settings, db, engines, driver, reconciler).recover()  # its holds
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
            instances=instances,
            engine_admin=EngineService(engines),
            admin_access=AdminAccessService(settings, instances, engines, driver, handoffs),
            metrics=MetricsService(db),
            system=SystemService(settings, db),
            hibernation=HibernationService(settings, db, instances, reconciler, activity),
            backups=backups,
            domains=domains,
            files=files,
            deploys=deploys,
            jobs=JobService(settings, db, instances),
            ssh_keys=SshKeyService(
                settings, db, await asyncio.to_thread(load_host_key, settings.sftp_host_key_file)
            ),
            caddy=caddy,
        )

    def start_reconciling(self) -> None:
        """Start the reconcile loop, the scheduled jobs (the idle sweep) and the reception of
        the activity engines report."""
        self.activity_reports = ActivityReceiver(
            self.settings.activity_socket, self.settings.instances_dir, self._host_of, self.activity
        )
        try:
            self.activity_reports.open()
        except OSError as err:  # e.g. a path too long for a Unix socket: the proxy still sees
            where = self.settings.activity_socket
            log.warning("engines cannot report activity (%s): %s", where, err)
            self.activity_reports = None
        self._loop_task = asyncio.create_task(self.reconciler.run(), name="reconcile")
        sweep: Callable[[], Awaitable[object]] = self.hibernation.sweep_idle
        if self.caddy is not None:  # Caddy's in-flight counts are read right before a sweep
            sweep = self.caddy.fresh(sweep)
        self.scheduler.every("idle-sweep", self.settings.idle_sweep_interval_s, sweep)
        # disk usage of running instances, and stops of those over their quota
        limits = self.instances.limits
        self.scheduler.every("disk-sweep", self.settings.disk_usage_interval_s, limits.sweep)
        self.scheduler.start()
        self._backups_task = asyncio.create_task(self.backups.start(self.scheduler))
        # scheduled jobs of instances, added again from the database; those of deleted
        # instances are swept away
        self._jobs_task = asyncio.create_task(self.jobs.start(self.scheduler))
        self.scheduler.every("jobs-forget-deleted", 300, self.jobs.forget_deleted)

    async def _host_of(self, instance_id: str) -> str | None:
        async with self.db.read() as session:
            instance = await session.get(Instance, instance_id)
        if instance is None or instance.name is None:  # gone, or deleted
            return None
        return self.settings.instance_host(instance.name)

    async def close(self) -> None:
        """Stop reconciling and close the database. Instances keep running on purpose."""
        if self.activity_reports is not None:
            self.activity_reports.close()
        if self._backups_task is not None:
            with contextlib.suppress(Exception):  # logged by the task itself
                await self._backups_task
        await self.backups.close()
        if self._jobs_task is not None:
            with contextlib.suppress(Exception):  # logged by the task itself
                await self._jobs_task
        self.scheduler.shutdown()
        await self.jobs.aclose()
        await self.reconciler.hibernator.aclose()
        await self.reconciler.close()
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        if self.caddy is not None:
            await self.caddy.aclose()
        await self.driver.aclose()
        await self.db.aclose()
        await self.engine.dispose()


def _verification_port(settings: Settings) -> int:
    """The plain-HTTP port a custom domain is checked on: Caddy's, or PF_HTTP's."""
    listen = settings.caddy_http if settings.proxy == "caddy" else settings.http
    return int(listen.rsplit(":", 1)[1])
