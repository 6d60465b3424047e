"""Hibernation: putting an instance to sleep, and waking it on its next request.

Desired state says what should be: `desired = "hibernated"` (written by the idle sweep or an
owner) means "not running, and woken by its next request"; `desired = "running"` means awake.
The reconciler makes it so; this module is its half that deals with sleep:

- `Hibernator.keep_hibernated` (run by the reconciler, in its one task for the instance):
  the route becomes `asleep` first (new requests are held, see below), requests in flight
  drain (bounded by `PF_HIBERNATE_DRAIN_S`), the engine is stopped cleanly (SIGTERM:
  PocketBase checkpoints its WAL), and the move to `hibernated` is recorded with its event.
  An idle-sweep hibernation is called off if a request came in since the sweep decided.
- `Hibernator.wake` (the proxy's `proxy.wake.Waker`): the fast path of a held request. It
  takes the instance exclusively (`Reconciler.exclusive`: a hibernation in progress finishes
  first), reads the instance (one query), starts the engine while `desired = running` is
  written beside it, publishes the `UP` route and hands the upstream to every held request.
  It records `running` once they were answered (at most `_ANSWERED_WAIT_S` later: the
  database work would compete with their forwarding for the event loop), and only then
  resumes the replication of its databases, in the background (`ReplicationLink.awake`:
  Litestream reads the WAL first, so the held requests' writes are shipped too; a failed
  wake resumes nothing). Each wake logs its spans (`wake HOST: exclusive=... ms`, info).
  Concurrent calls join one wake; a semaphore (`PF_WAKE_CONCURRENCY`) bounds how many
  instances start at once. A failed start answers `WakeFailed` with a back-off (1, 2, 4 ...
  s) during which requests are refused at once, and after `PF_MAX_CRASH_RESTARTS` failures
  in a row the instance is `failed` (its route `stopped`).

Crash safety: `desired = running` is committed before a woken instance is recorded `running`;
if the control plane dies in between, the next reconcile pass finds an instance that should
run and adopts (or starts) its process. Across restarts hibernated instances stay asleep: the
first pass publishes their `asleep` routes and later passes skip them (`sleeping_settled`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Coroutine
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_
from sqlmodel import col

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Instance, utcnow
from control_plane.drivers.base import Driver, InstanceSpec, StartError
from control_plane.engines.registry import EngineRegistry
from control_plane.lifecycle import IllegalTransition, InstanceState, transition
from control_plane.routes_for import upstream_for
from control_plane.settings import Settings
from control_plane.specs import spec_for
from proxy.activity import ActivityTracker, HostActivity
from proxy.routes import Route, RouteState, Upstream
from proxy.wake import WakeFailed

log = logging.getLogger(__name__)

IDLE_ACTOR = "scheduler:idle"
WAKE_ACTOR = "proxy:wake"
ACTOR = "reconciler"
_DRAIN_POLL_FIRST_S = 0.001
_DRAIN_POLL_MAX_S = 0.05
_REFUSED_RETRY_AFTER_S = 5
# A woken instance is recorded `running` once the requests held for its wake were answered,
# or after this many seconds (an upload, an event stream, more traffic)
_ANSWERED_WAIT_S = 0.5


def sleeping_settled() -> ColumnElement[bool]:
    """SQL: the instance sleeps as wanted and nothing about it needs the reconciler (for
    queries joining `Account`): hibernated, wanted hibernated, no pid, no hold, owner active."""
    return and_(
        col(Instance.status) == InstanceState.HIBERNATED.value,
        col(Instance.desired) == "hibernated",
        col(Instance.pid).is_(None),
        col(Instance.hold).is_(None),
        col(Account.suspended_at).is_(None),
    )


def idle_limit_s(settings: Settings, instance: Instance) -> int:
    """The instance's idle limit in seconds: its own, else the fleet's; 0 means never."""
    return settings.idle_timeout_s if instance.idle_timeout_s is None else instance.idle_timeout_s


def _stamp(moment: datetime | None) -> float:
    return moment.timestamp() if moment is not None else 0.0


def idle_for_s(instance: Instance, seen: HostActivity | None, now: float) -> float | None:
    """Seconds since the instance last did anything (request, start), as the proxy saw it or
    the database recorded it; None while it is busy (a request in flight, an open stream)."""
    if seen is not None and (seen.open_streams > 0 or seen.in_flight > 0):
        return None
    last = max(
        seen.last_request_at if seen is not None else 0.0,
        _stamp(instance.last_request_at),
        _stamp(instance.started_at),
    )
    return now - last


def is_idle(settings: Settings, instance: Instance, seen: HostActivity | None, now: float) -> bool:
    """Whether a running instance has been idle past its limit (never when the limit is 0)."""
    limit = idle_limit_s(settings, instance)
    idle = idle_for_s(instance, seen, now)
    return limit > 0 and idle is not None and idle >= limit


class ReplicationLink(Protocol):
    """What sleep and wake tell replication (`control_plane.backups.pauses`): the instance's
    engine stopped, or is about to start."""

    async def asleep(self, instance: Instance) -> None: ...

    async def awake(self, instance: Instance) -> None: ...


class ReconcilerLink(Protocol):
    """What the hibernator needs of the reconciler (see `control_plane.reconcile`)."""

    def exclusive(self, instance_id: str) -> AbstractAsyncContextManager[None]: ...

    def publish(self, route: Route) -> Awaitable[None]: ...

    def nudge(self) -> None: ...

    def start_instance(self, spec: InstanceSpec) -> Awaitable[tuple[int, InstanceSpec]]: ...


class Hibernator:
    """Sleep and wake of instances; see the module docstring for the guarantees."""

    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        engines: EngineRegistry,
        driver: Driver,
        activity: ActivityTracker,
        reconciler: ReconcilerLink,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engines = engines
        self.driver = driver
        self.activity = activity
        self.reconciler = reconciler
        self._wakes: dict[str, _Wake] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(settings.wake_concurrency)
        self.replication: ReplicationLink | None = None  # set by the assembled control plane

    def replication_awake(self, instance: Instance) -> None:
        """Tell replication (in the background) that the instance is about to start."""
        if self.replication is not None:
            self._background(self.replication.awake(instance), f"resume {instance.id}")

    def _background(self, work: Coroutine[Any, Any, None], name: str) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("%s failed", name)

        task = asyncio.create_task(run(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ----- putting to sleep (called by the reconciler in its task for the instance)

    async def keep_hibernated(self, instance: Instance, spec: InstanceSpec) -> None:
        """Make an instance that should sleep (status `running` or `hibernated`) sleep."""
        host = self.settings.instance_host(spec.name)
        if instance.status == InstanceState.HIBERNATED:
            if instance.pid is not None:  # left over by an interrupted hibernation
                await self.driver.stop(spec, instance.pid)
                await self._save(instance, None, "", pid=None)
            await self.reconciler.publish(self._asleep_route(instance, host))
            return
        if instance.desired_by == IDLE_ACTOR and not self._still_idle(instance, host):
            await self._save(
                instance, None, "", desired="running", desired_by=ACTOR, only_if_idle_sweep=True
            )
            return
        await self.reconciler.publish(self._asleep_route(instance, host))
        await self._drain(host, time.monotonic() + self.settings.hibernate_drain_s)
        await self.driver.stop(spec, instance.pid)
        seen = self.activity.snapshot().get(host)
        fields: dict[str, Any] = {"pid": None, "hibernated_at": utcnow(), "memory_bytes": None}
        if seen is not None and seen.last_request_at > _stamp(instance.last_request_at):
            fields["last_request_at"] = datetime.fromtimestamp(seen.last_request_at, tz=UTC)
        if instance.desired_by == IDLE_ACTOR:
            idle = idle_for_s(instance, seen, time.time()) or 0.0
            reason = f"idle for {idle:.0f} s"
        else:
            reason = "hibernation requested"
        await self._save(
            instance, InstanceState.HIBERNATED, reason, actor=instance.desired_by or ACTOR, **fields
        )
        await self.driver.asleep(spec)  # (in the background: its next wake, made ready)
        if self.replication is not None and instance.status == InstanceState.HIBERNATED:
            try:
                await self.replication.asleep(instance)
            except Exception:  # replication's own pass pauses it later
                log.exception("pausing the replication of %s failed", instance.id)

    def _still_idle(self, instance: Instance, host: str) -> bool:
        return is_idle(self.settings, instance, self.activity.snapshot().get(host), time.time())

    def _asleep_route(self, instance: Instance, host: str) -> Route:
        name = instance.name or instance.former_name
        return Route(host, instance.id, RouteState.ASLEEP, None, f"Instance {name} is asleep.")

    async def _drain(self, host: str, deadline: float) -> None:
        """Wait until no request is in flight to `host` (event streams aside), at most until
        `deadline` (monotonic)."""
        delay = _DRAIN_POLL_FIRST_S
        while self.activity.in_flight(host) > 0 and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, _DRAIN_POLL_MAX_S)

    # ----- waking (proxy.wake.Waker)

    async def wake(self, route: Route) -> Upstream:
        """Wake the instance of an asleep route; see `proxy.wake.Waker` for the contract."""
        wake = self._wakes.get(route.instance_id)
        if wake is None:
            wake = self._wakes[route.instance_id] = _Wake()
            task = asyncio.create_task(self._wake(route, wake), name=f"wake {route.host}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await wake.join()

    async def _wake(self, route: Route, wake: _Wake) -> None:
        name = route.host.partition(".")[0]
        future = wake.outcome
        try:
            async with self.reconciler.exclusive(route.instance_id):
                wake.timeline.mark("exclusive")
                await self._wake_exclusively(route, wake, name)
        except WakeFailed as failed:
            _settle(future, failed)
        except asyncio.CancelledError:
            _settle(future, WakeFailed(f"Instance {name} could not be woken now.", 1))
            raise
        except Exception as exc:  # a wake must answer its requests, whatever went wrong
            log.exception("waking %s failed", route.host)
            _settle(future, WakeFailed(f"Instance {name} could not be woken: {exc}", 5))
        finally:
            if self._wakes.get(route.instance_id) is wake:
                del self._wakes[route.instance_id]

    async def _wake_exclusively(self, route: Route, wake: _Wake, name: str) -> None:
        future, timeline = wake.outcome, wake.timeline
        started = time.monotonic()
        async with self.db.read() as session:
            row = await session.get(Instance, route.instance_id)
        timeline.mark("read")
        if row is None or row.port is None or row.name is None:
            raise WakeFailed(f"Instance {name} is gone.", _REFUSED_RETRY_AFTER_S)
        if row.status == InstanceState.RUNNING and row.pid is not None:
            _settle(future, upstream_for(self.driver, row, row.port))  # woken meanwhile
            return
        if row.status != InstanceState.HIBERNATED or row.desired not in ("running", "hibernated"):
            raise WakeFailed(f"Instance {name} is {row.status}.", _REFUSED_RETRY_AFTER_S)
        if row.hold:
            raise WakeFailed(f"Instance {name} is held by {row.hold}.", _REFUSED_RETRY_AFTER_S)
        if row.next_start_at is not None and row.next_start_at > utcnow():
            wait = math.ceil((row.next_start_at - utcnow()).total_seconds())
            raise WakeFailed(f"Instance {name} failed to start; retry in {wait} s.", wait)
        spec = spec_for(self.settings, self.engines, row)
        async with self._slots:
            timeline.mark("slot")
            marking = asyncio.create_task(self._mark_waking(row.id))
            try:
                pid, spec = await self.reconciler.start_instance(spec)
                timeline.mark("start")
            except StartError as err:
                await marking
                raise await self._wake_failed(row, route, err.reason) from None
            except BaseException:
                marking.cancel()
                raise
            await marking
            timeline.mark("marked")
        upstream = upstream_for(self.driver, row, spec.port)
        await self.reconciler.publish(Route(route.host, row.id, RouteState.UP, upstream))
        timeline.mark("published")
        _settle(future, upstream)
        took_ms = (time.monotonic() - started) * 1000
        # the database work below would compete with the held requests for the event loop
        await self._answered(route.host, wake)
        timeline.mark("answered")
        try:
            await self._save(
                row,
                InstanceState.RUNNING,
                f"woken by a request ({took_ms:.0f} ms)",
                actor=WAKE_ACTOR,
                pid=pid,
                started_at=utcnow(),
                running_generation=row.generation,
                crash_count=0,
                next_start_at=None,
                hibernated_at=None,
            )
        finally:
            # after the answer, not beside the start (where its event-loop time delayed the
            # answer): Litestream reads the WAL first when it resumes, so what the held
            # requests wrote meanwhile is shipped too
            self.replication_awake(row)
        timeline.mark("saved")
        log.info("wake %s: %s", route.host, timeline.text())

    async def _answered(self, host: str, wake: _Wake) -> None:
        """Return once every request held for `wake` has taken its upstream and none is in
        flight to `host` any more (event streams aside), or after `_ANSWERED_WAIT_S`."""
        deadline = time.monotonic() + _ANSWERED_WAIT_S
        if wake.held:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_ANSWERED_WAIT_S):
                    await wake.handed.wait()
        await self._drain(host, deadline)

    async def _mark_waking(self, instance_id: str) -> None:
        """Commit `desired = running` (so a crash from here on ends with the instance up)."""
        async with self.db() as session:
            row = await session.get(Instance, instance_id)
            if row is not None and row.desired == "hibernated":
                row.desired = "running"
                row.desired_by = WAKE_ACTOR
                session.add(row)
                await session.commit()

    async def _wake_failed(self, row: Instance, route: Route, reason: str) -> WakeFailed:
        """Record a failed wake: back to sleep with a back-off, or `failed` after too many."""
        name = row.name or row.former_name
        failures = row.crash_count + 1
        if failures > self.settings.max_crash_restarts:
            why = f"failed to wake {failures} times in a row; last: {reason}"
            await self._save(
                row, InstanceState.FAILED, why, desired="hibernated", crash_count=failures
            )
            await self.reconciler.publish(
                Route(route.host, row.id, RouteState.STOPPED, None, f"Instance {name} failed.")
            )
            return WakeFailed(f"Instance {name} failed to start; its owner can see why.", 60)
        delay = min(60, 2 ** (failures - 1))
        await self._save(
            row,
            InstanceState.HIBERNATED,
            f"a wake failed ({failures} in a row); next try in {delay} s: {reason}",
            desired="hibernated",
            crash_count=failures,
            next_start_at=utcnow() + timedelta(seconds=delay),
        )
        return WakeFailed(f"Instance {name} failed to start; retry in {delay} s.", delay)

    # ----- recording

    async def _save(
        self,
        instance: Instance,
        target: InstanceState | None,
        reason: str,
        *,
        actor: str = ACTOR,
        only_if_idle_sweep: bool = False,
        **fields: Any,
    ) -> None:
        """Apply `fields` and (with a `target`) move to it — unless a service moved the
        instance meanwhile: then the move is skipped and the reconciler nudged. With
        `only_if_idle_sweep`, nothing is written unless the idle sweep is still the last to
        have set `desired`."""
        async with self.db() as session:
            row = await session.get(Instance, instance.id)
            if row is None:
                return
            if only_if_idle_sweep and (row.desired, row.desired_by) != ("hibernated", IDLE_ACTOR):
                return
            for key, value in fields.items():
                setattr(row, key, value)
            moved = row.status != instance.status
            if target is not None and not moved:
                try:
                    transition(session, row, target, actor=actor, reason=reason)
                except IllegalTransition:
                    log.warning("illegal move skipped: %s to %s", row.id, target)
            session.add(row)
            await session.commit()
        for key, value in fields.items():
            setattr(instance, key, value)
        instance.status = row.status
        if moved or only_if_idle_sweep:
            self.reconciler.nudge()

    async def aclose(self) -> None:
        """Cancel wakes in progress (their requests get 503)."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self._tasks, return_exceptions=True)


class _Wake:
    """One wake in progress: its outcome, the requests held for it and its timeline."""

    def __init__(self) -> None:
        self.outcome: asyncio.Future[Upstream] = asyncio.get_running_loop().create_future()
        self.outcome.add_done_callback(_retrieve)
        self.held = 0  # requests awaiting the outcome now
        self.handed = asyncio.Event()  # set once the outcome is there and none awaits it
        self.timeline = _Timeline()

    async def join(self) -> Upstream:
        """The outcome, for one held request (cancelling this call leaves the wake going)."""
        self.held += 1
        try:
            return await asyncio.shield(self.outcome)
        finally:
            # (the proxy forwards at once, in this step: it counts in flight from here on)
            self.held -= 1
            if self.held == 0 and self.outcome.done():
                self.handed.set()


class _Timeline:
    """Monotonic marks of one wake, for its log line: each span in ms since the mark before
    (the first since the wake was asked)."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._spans: list[tuple[str, float]] = []

    def mark(self, name: str) -> None:
        now = time.monotonic()
        self._spans.append((name, (now - self._last) * 1000))
        self._last = now

    def text(self) -> str:
        return " ".join(f"{name}={ms:.2f}" for name, ms in self._spans) + " ms"


def _settle(future: asyncio.Future[Upstream], outcome: Upstream | WakeFailed) -> None:
    if future.done():
        return
    if isinstance(outcome, WakeFailed):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _retrieve(future: asyncio.Future[Upstream]) -> None:
    """Mark a wake's exception as retrieved (every held request may have left already)."""
    if not future.cancelled():
        future.exception()
