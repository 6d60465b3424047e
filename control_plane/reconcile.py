"""The reconcile loop: makes processes and routes match the desired state in the control DB.

Woken at once by a nudge (any change of desired state) and every few seconds anyway. Each
instance is reconciled by at most one task at a time; a task reads the instance, acts through
the driver without holding a database transaction, then records the outcome through
`lifecycle.transition`. Hibernation (desired `hibernated`) and the wake-on-request fast path
live in `control_plane.hibernation`, which shares this loop's one-task-per-instance rule
through `exclusive()`. Crashed instances restart with exponential back-off and become
`failed` (with the reason and their last log lines) after repeated crashes. After a restart of
the control plane the first pass re-adopts running instances by their stored pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import shutil
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlmodel import col, select

from control_plane.db.engine import SessionFactory, serialized, update_row
from control_plane.db.models import Account, Instance, utcnow
from control_plane.drivers.base import Driver, InstanceSpec, PortTakenError, RunState, StartError
from control_plane.drivers.ports import NoFreePortError, free_port
from control_plane.engines.registry import EngineRegistry
from control_plane.hibernation import Hibernator, sleeping_settled
from control_plane.lifecycle import IllegalTransition, InstanceState, transition
from control_plane.limits import QUOTA_ACTOR, quota_stop_reason
from control_plane.metrics import FleetSampler
from control_plane.routes_for import route_for
from control_plane.settings import Settings
from control_plane.specs import spec_for
from proxy.activity import ActivityTracker
from proxy.routes import Route, RouteSink, RouteState

log = structlog.get_logger("reconcile")

ACTOR = "reconciler"
STABLE_AFTER_S = 60  # a run this long forgives earlier crashes
_PORT_MOVES = 3  # ports tried after the instance's own was found held by another process
TRASH_SWEEP_EVERY_S = 3600.0
# A running instance with nothing to do is visited fully (driver status, one read) only every
# this many passes; in between, a system call says its process is still there.
FULL_VISIT_EVERY = 10
# Reconcile tasks working at once (the others wait their turn): a fleet's first pass, or a
# burst of changes, does not open a thousand sessions and driver calls at the same moment.
RECONCILE_CONCURRENCY = 32
TRASH_STAMP = "%Y%m%dT%H%M%SZ"  # trash entries are named STAMP-ID-NAME


def _visit_slot(instance_id: str) -> int:
    return zlib.crc32(instance_id.encode()) % FULL_VISIT_EVERY


def backoff_s(crashes: int) -> float:
    return float(min(60, 2 ** max(0, crashes - 1)))


@dataclass(frozen=True)
class Snapshot:
    """What one reconcile task read of an instance before acting."""

    instance: Instance
    owner_suspended: bool

    @property
    def wants(self) -> str:
        desired = self.instance.desired
        if self.instance.hold and desired != "deleted":
            return "stopped"  # an exclusive operation (a restore) holds it stopped
        if desired in ("running", "hibernated") and self.owner_suspended:
            return "stopped"
        return desired


def settled(instance: Instance, owner_suspended: bool) -> bool:
    status = InstanceState(instance.status)
    wants = instance.desired
    if owner_suspended and wants in ("running", "hibernated"):
        wants = "stopped"
    if instance.hold and wants != "deleted":
        wants = "stopped"
    if wants == "deleted":
        return status == InstanceState.DELETED
    if wants == "stopped":
        return status in (InstanceState.STOPPED, InstanceState.FAILED)
    if status == InstanceState.FAILED:
        return True
    if wants == "hibernated":
        return status == InstanceState.HIBERNATED
    return status == InstanceState.RUNNING and instance.running_generation == instance.generation


class Reconciler:
    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        engines: EngineRegistry,
        driver: Driver,
        routes: RouteSink,
        activity: ActivityTracker,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engines = engines
        self.driver = driver
        self.routes = routes
        self.activity = activity
        self._wake = asyncio.Event()
        self._changed = asyncio.Event()
        self._inflight: dict[str, asyncio.Task[None]] = {}
        self._pushed: dict[str, Route] = {}
        self._last_sample = 0.0
        self._last_trash_sweep = 0.0
        self._passes = 0
        self.sampler = FleetSampler(settings, db, engines, driver, activity)
        self._stopping = False
        self._slots = asyncio.Semaphore(RECONCILE_CONCURRENCY)
        self.hibernator = Hibernator(settings, db, engines, driver, activity, self)
        self._unlocated: list[Instance] = []  # see `_locate`

    # ----- the loop

    def nudge(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Reconcile until cancelled. The first pass publishes every route at once."""
        await self.routes.replace_all(await self._all_routes())
        await self._locate()
        while not self._stopping:
            self._wake.clear()
            try:
                await self.pass_once()
            except Exception:  # the loop must outlive any one bad pass
                log.exception("reconcile pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.reconcile_interval_s)

    async def close(self) -> None:
        self._stopping = True
        self.nudge()
        tasks = list(self._inflight.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def pass_once(self) -> None:
        # Sleeping instances need no visit until something about them changes (their asleep
        # routes were published by `run`), and running ones with nothing to do only a look
        # at their process now and then (`_steady`): a fleet of mostly hibernated instances
        # costs one query per pass.
        query = (
            select(Instance, Account.suspended_at)
            .join(Account, col(Account.id) == col(Instance.owner_id))
            .where(col(Instance.status) != InstanceState.DELETED.value, ~sleeping_settled())
        )
        async with self.db.read() as session:
            rows = (await session.exec(query)).all()
        self._passes += 1
        for instance, suspended_at in rows:
            if instance.id in self._inflight:
                continue
            # each instance's full visit comes every FULL_VISIT_EVERY passes, in its own
            # pass (by its id), so that a big fleet's visits are spread over the passes
            full = (self._passes + _visit_slot(instance.id)) % FULL_VISIT_EVERY == 0
            if not full and self._steady(instance, suspended_at is not None):
                continue
            task = asyncio.create_task(self._reconcile_task(instance.id))
            self._inflight[instance.id] = task
        now = time.monotonic()
        if now - self._last_sample >= self.settings.sample_interval_s:
            self._last_sample = now
            await self.sampler.sample()
        if now - self._last_trash_sweep >= TRASH_SWEEP_EVERY_S:
            self._last_trash_sweep = now
            await asyncio.to_thread(self._sweep_trash)

    def next_change(self) -> asyncio.Event:
        """An event set when the next change to any instance's state is done (a reconcile
        task or an `exclusive` section ends)."""
        return self._changed

    def _steady(self, instance: Instance, owner_suspended: bool) -> bool:
        """Running as wanted, nothing pending (no new configuration, no crash to forgive, its
        route pushed) and its process seemingly there: nothing to do this pass."""
        return (
            instance.desired == "running"
            and instance.status == InstanceState.RUNNING
            and instance.running_generation == instance.generation
            and instance.hold is None
            and not owner_suspended
            and instance.crash_count == 0
            and instance.pid is not None
            and (route := self._route_for(instance)) is not None
            and self._pushed.get(route.host) == route
            and self.driver.seems_alive(instance.pid)
        )

    async def wait_settled(self, instance_id: str, timeout: float) -> None:
        """Return once the instance's state matches its desired state, or after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            changed = self._changed
            async with self.db.read() as session:
                instance = await session.get(Instance, instance_id)
                if instance is None:
                    return
                owner = await session.get(Account, instance.owner_id)
                suspended = owner is not None and owner.suspended_at is not None
                if settled(instance, suspended) and instance_id not in self._inflight:
                    return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self.nudge()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), min(remaining, 1.0))

    @contextlib.asynccontextmanager
    async def exclusive(self, instance_id: str) -> AsyncIterator[None]:
        """Run the body as the only reconcile work on `instance_id`: wait until no reconcile
        task (or other holder) works on it, and keep passes from starting one until the body
        ends. For work that acts on one instance outside a pass (waking it on a request)."""
        me = asyncio.current_task()
        assert me is not None
        while (other := self._inflight.get(instance_id)) is not None and other is not me:
            await asyncio.wait({other})
        self._inflight[instance_id] = me
        try:
            yield
        finally:
            if self._inflight.get(instance_id) is me:
                del self._inflight[instance_id]
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def publish(self, route: Route) -> None:
        """Push `route` to the route sink now (unless it is what was pushed last)."""
        if self._pushed.get(route.host) != route:
            await self.routes.set(route)
            self._pushed[route.host] = route

    # ----- one instance

    async def _reconcile_task(self, instance_id: str) -> None:
        try:
            async with self._slots:
                await self.reconcile_instance(instance_id)
        except Exception:
            log.exception("reconciling an instance failed", instance=instance_id)
        finally:
            self._inflight.pop(instance_id, None)
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

    async def _read(self, instance_id: str) -> Snapshot | None:
        async with self.db.read() as session:
            found = (
                await session.exec(
                    select(Instance, Account.suspended_at)
                    .join(Account, col(Account.id) == col(Instance.owner_id))
                    .where(Instance.id == instance_id)
                )
            ).first()
            if found is None or found[0].status == InstanceState.DELETED:
                return None
            return Snapshot(found[0], found[1] is not None)

    async def reconcile_instance(self, instance_id: str) -> None:
        snap = await self._read(instance_id)
        if snap is None:
            return
        instance = snap.instance
        spec = spec_for(self.settings, self.engines, instance)
        if snap.wants == "deleted" or instance.status == InstanceState.DELETING:
            await self._delete(instance, spec)
        elif snap.wants == "hibernated" and instance.status in (
            InstanceState.RUNNING,
            InstanceState.HIBERNATED,
        ):
            await self.hibernator.keep_hibernated(instance, spec)
        elif snap.wants in ("running", "hibernated"):  # to hibernate, it first has to run
            await self._keep_running(instance, spec)
        else:
            reason = "account suspended" if snap.owner_suspended else "stopped"
            if not snap.owner_suspended and instance.desired_by == QUOTA_ACTOR:
                reason = quota_stop_reason(self.settings, instance)
            if instance.hold:
                reason = f"held by {instance.hold}"
            await self._keep_stopped(instance, spec, reason)

    async def _keep_running(self, instance: Instance, spec: InstanceSpec) -> None:
        status = InstanceState(instance.status)
        # no health request: PocketBase logs each one, and a request every pass of every
        # running instance made up most of an idle instance's request log
        observed = await self.driver.status(spec, instance.pid, health=False)
        if observed.state == RunState.RUNNING:
            if instance.running_generation in (None, instance.generation):
                await self._record_running(instance, observed.pid, adopted=True)
                return
            await self.driver.stop(spec, observed.pid)
            await self._record(
                instance,
                InstanceState.PROVISIONING,
                "restarting with its new configuration",
                actor=instance.desired_by or ACTOR,
                pid=None,
            )
            status = InstanceState.PROVISIONING
        elif status == InstanceState.RUNNING:
            tail = " | ".join(self.driver.read_logs(spec, 5))
            await self._crashed(instance, f"exited unexpectedly; last output: {tail}")
            return
        if status == InstanceState.FAILED:
            await self._push_route(instance)
            return
        if instance.next_start_at is not None and instance.next_start_at > utcnow():
            wait = (instance.next_start_at - utcnow()).total_seconds()
            asyncio.get_running_loop().call_later(wait, self.nudge)
            return
        await self._start(instance, spec)

    async def _start(self, instance: Instance, spec: InstanceSpec) -> None:
        if instance.status in (InstanceState.STOPPED, InstanceState.HIBERNATED):
            await self._record(
                instance, InstanceState.PROVISIONING, "starting", actor=instance.desired_by
            )
        if instance.pending_superuser:
            creds = instance.pending_superuser
            task = spec.engine.superuser_task(
                spec.version, spec.layout, creds["email"], creds["password"]
            )
            code, output = await self.driver.run_task(spec, task.argv, task.env)
            if code != 0:
                await self._crashed(instance, f"creating the superuser failed: {output[-500:]}")
                return
            await self._update(instance.id, pending_superuser=None)
        self.hibernator.replication_awake(instance)  # its databases replicate again
        try:
            pid, spec = await self.start_instance(spec)
        except StartError as exc:
            await self._crashed(instance, exc.reason)
            return
        instance.port = spec.port
        await self._record_running(instance, pid, adopted=False)

    async def start_instance(self, spec: InstanceSpec) -> tuple[int, InstanceSpec]:
        """`driver.start(spec)`; while the instance's port is held by a process that is not
        the instance's (`PortTakenError`: a squatter, or anything else), move the instance to
        a free port (committed first) and start it there. Returns its pid and the spec it now
        runs with."""
        for attempt in range(_PORT_MOVES + 1):
            try:
                return await self.driver.start(spec), spec
            except PortTakenError as taken:
                if attempt == _PORT_MOVES:
                    raise
                port = await self.move_port(spec.id, taken.port)
                log.warning("instance_port_moved", instance=spec.id, old=taken.port, new=port)
                spec = dataclasses.replace(spec, port=port)
        raise AssertionError("unreachable")

    async def move_port(self, instance_id: str, old: int) -> int:
        """Give the instance a port no instance holds and nothing binds now; commit it."""
        async with self.db() as session:
            await serialized(session, "instances:create")  # the ports taken, then one more
            taken = set(
                (
                    await session.exec(select(Instance.port).where(col(Instance.port).is_not(None)))
                ).all()
            )
            try:
                port = free_port(self.settings, {p for p in taken if p is not None} | {old})
            except NoFreePortError as err:
                raise StartError(f"instance {instance_id}: {err}") from err
            row = await session.get(Instance, instance_id)
            if row is None:
                raise StartError(f"instance {instance_id} is gone")
            row.port = port
            session.add(row)
            await session.commit()
        return port

    async def _record_running(self, instance: Instance, pid: int | None, *, adopted: bool) -> None:
        now = utcnow()
        fields: dict[str, object] = {"pid": pid, "next_start_at": None}
        node = self.driver.node_of(instance.id)
        if node is not None:  # Instance.node: where the driver placed it
            fields["node"] = node
        if not adopted or instance.running_generation is None:
            fields["running_generation"] = instance.generation
        if not adopted or instance.started_at is None:
            fields["started_at"] = now
        started = instance.started_at or now
        if instance.crash_count and (now - started) > timedelta(seconds=STABLE_AFTER_S):
            fields["crash_count"] = 0
        if instance.status == InstanceState.RUNNING:
            if any(getattr(instance, k) != v for k, v in fields.items()):
                await self._update(instance.id, **fields)
        else:
            await self._record(
                instance,
                InstanceState.RUNNING,
                "adopted a running process" if adopted else "started",
                actor=ACTOR,
                **fields,
            )
        await self._push_route(instance, up=True)

    async def _crashed(self, instance: Instance, reason: str) -> None:
        crashes = instance.crash_count + 1
        if crashes > self.settings.max_crash_restarts:
            await self._record(
                instance,
                InstanceState.FAILED,
                f"failed {crashes} times in a row; last: {reason}",
                crash_count=crashes,
                pid=None,
            )
        else:
            delay = backoff_s(crashes)
            await self._record(
                instance,
                InstanceState.PROVISIONING,
                f"restarting in {delay:.0f} s after: {reason}",
                crash_count=crashes,
                pid=None,
                next_start_at=utcnow() + timedelta(seconds=delay),
            )
            asyncio.get_running_loop().call_later(delay, self.nudge)
        await self._push_route(instance)

    async def _keep_stopped(self, instance: Instance, spec: InstanceSpec, reason: str) -> None:
        observed = await self.driver.status(spec, instance.pid, health=False)
        if observed.state == RunState.RUNNING or instance.pid is not None:
            await self.driver.stop(spec, observed.pid or instance.pid)
        if instance.status not in (InstanceState.STOPPED, InstanceState.FAILED):
            await self._record(
                instance, InstanceState.STOPPED, reason, actor=instance.desired_by, pid=None
            )
        elif instance.pid is not None:
            await self._update(instance.id, pid=None)
        await self._push_route(instance)

    async def _delete(self, instance: Instance, spec: InstanceSpec) -> None:
        if instance.status != InstanceState.DELETING:
            await self._record(instance, InstanceState.DELETING, "delete requested")
        await self.driver.stop(spec, instance.pid)
        host = self.settings.instance_host(spec.name)
        await self.routes.remove(host)
        self._pushed.pop(host, None)
        self.activity.forget(host)
        keep_at = None
        if not instance.purge:
            stamp = utcnow().strftime(TRASH_STAMP)
            keep_at = self.settings.trash_dir / f"{stamp}-{instance.id}-{spec.name}"
        await self.driver.remove(spec, keep_at=keep_at)
        await self._record(
            instance,
            InstanceState.DELETED,
            "purged" if instance.purge else f"folder kept in the trash at {keep_at}",
            actor=instance.desired_by or ACTOR,
            pid=None,
            port=None,
            name=None,
            deleted_at=utcnow(),
        )

    # ----- recording outcomes

    async def _update(self, instance_id: str, **fields: object) -> None:
        await update_row(self.db, Instance, instance_id, **fields)

    async def _record(
        self,
        instance: Instance,
        target: InstanceState,
        reason: str,
        *,
        actor: str = ACTOR,
        **fields: object,
    ) -> None:
        """Apply `fields` and move to `target` — unless a service moved the instance meanwhile
        (then only the fields are kept, and the next pass reconciles the new wish)."""
        async with self.db() as session:
            row = await session.get(Instance, instance.id)
            if row is None:
                return
            for key, value in fields.items():
                setattr(row, key, value)
            if row.status == instance.status:
                try:
                    transition(session, row, target, actor=actor or ACTOR, reason=reason)
                except IllegalTransition:
                    log.warning("illegal move skipped", instance=row.id, target=target)
            else:
                self.nudge()
            session.add(row)
            await session.commit()
        for key, value in fields.items():
            setattr(instance, key, value)
        instance.status = row.status
        log.info("instance moved", instance=instance.id, to=target.value, reason=reason)

    # ----- routes, trash

    def _route_for(self, instance: Instance, up: bool | None = None) -> Route | None:
        return route_for(self.settings, self.driver, instance, up)

    async def _push_route(self, instance: Instance, up: bool | None = None) -> None:
        route = self._route_for(instance, up)
        if route is None or self._pushed.get(route.host) == route:
            return
        await self.routes.set(route)
        self._pushed[route.host] = route

    async def _all_routes(self) -> list[Route]:
        async with self.db.read() as session:
            rows = (
                await session.exec(
                    select(Instance).where(col(Instance.status) != InstanceState.DELETED.value)
                )
            ).all()
        routes = [r for r in (self._route_for(i) for i in rows) if r is not None]
        self._pushed = {r.host: r for r in routes}
        self._unlocated = [row for row in rows if row.node]
        return routes

    async def _locate(self) -> None:
        """Once the driver knows where the nodes of the instances `_all_routes` published
        are (dialled at first as if on this machine, so that every route goes out at once),
        push again the routes that are still up and now go elsewhere."""
        rows, self._unlocated = self._unlocated, []
        await self.driver.locate({row.node for row in rows})
        for row in rows:
            route = self._route_for(row)
            pushed = self._pushed.get(route.host) if route is not None else None
            if route is None or pushed is None or pushed.state is not RouteState.UP:
                continue
            if route.state is RouteState.UP and pushed.upstream != route.upstream:
                await self.publish(route)

    def _sweep_trash(self) -> None:
        trash = self.settings.trash_dir
        if not trash.is_dir():
            return
        cutoff = utcnow() - timedelta(days=self.settings.trash_retention_days)
        for entry in trash.iterdir():
            try:
                moved = datetime.strptime(entry.name.split("-", 1)[0], TRASH_STAMP)
            except ValueError:
                continue
            if moved.replace(tzinfo=UTC) < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
