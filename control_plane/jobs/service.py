"""Scheduled jobs of instances: what owners ask for, and what the scheduler runs.

Owners (and operators), through `InstanceService.get` (another account's instance is 404):
- `create(account, name, data)`: a job for the instance `name`. Refusals: the schedule is not
  one, never fires or fires more often than `PF_JOB_MIN_INTERVAL_S` (422 on `schedule`), a
  body with GET or HEAD (422 on `body`), the instance has `PF_JOBS_PER_INSTANCE` jobs already
  (409); the shape of each field is checked by `control_plane.jobs.schemas` (422).
- `list_for`, `get`, `update` (PATCH: fields given change; a new schedule starts its grid
  now), `delete`, `runs` (newest first), `recent_runs` (of all its jobs, newest first). An
  unknown job, or one of another instance, is 404.

The scheduler (`start(scheduler)` at every start of the control plane; jobs are added again
from the database, nothing of them lives only in memory): every job that is not paused fires
`fire(job_id)` on its schedule. A run reads the job and its instance afresh, sends the request
through the proxy (`control_plane.jobs.runner`) and records a `JobRun`, keeping the newest
`PF_JOB_RUNS_KEEP` of the job. Never two runs of one job at once (a run still going when the
next is due makes that one skip). An instance that was stopped by its owner is not woken: the
run is recorded as `error` without a request. Jobs of a deleted instance are removed (when
they would fire, at start, and by `forget_deleted`, swept periodically).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import delete
from sqlmodel import col, func, select

from control_plane.db.engine import SessionFactory
from control_plane.db.models import Account, Instance, utcnow
from control_plane.jobs.models import JobRun, ScheduledJob
from control_plane.jobs.runner import JobRequest, JobRunner, RunOutcome
from control_plane.jobs.schedule import ScheduleError, checked_schedule, parse_schedule
from control_plane.jobs.schemas import JobCreate, JobUpdate
from control_plane.lifecycle import InstanceState
from control_plane.scheduler import Scheduler
from control_plane.services.errors import Conflict, Invalid, NotFound
from control_plane.services.instances import InstanceService
from control_plane.settings import Settings

log = logging.getLogger(__name__)

_NO_BODY_METHODS = ("GET", "HEAD")
STOPPED_ERROR = "the instance is stopped: its jobs run while it runs or sleeps"


def scheduler_id(job_id: str) -> str:
    return f"job:{job_id}"


class JobService:
    def __init__(
        self,
        settings: Settings,
        db: SessionFactory,
        instances: InstanceService,
        runner: JobRunner | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.instances = instances
        self.runner = runner if runner is not None else JobRunner(settings)
        self._scheduler: Scheduler | None = None
        self._running: set[str] = set()
        self._runs: set[asyncio.Task[object]] = set()
        self._closing = False

    # ----- owners

    def _schedule_text(self, text: str) -> str:
        try:
            return checked_schedule(text, self.settings.job_min_interval_s).text
        except ScheduleError as exc:
            raise Invalid(str(exc), field="schedule") from None

    @staticmethod
    def _check_body(method: str, body: str | None) -> None:
        if body is not None and method in _NO_BODY_METHODS:
            raise Invalid(f"a {method} request carries no body", field="body")

    async def create(self, account: Account, name: str, data: JobCreate) -> ScheduledJob:
        instance = await self.instances.get(account, name)
        schedule = self._schedule_text(data.schedule)
        self._check_body(data.method, data.body)
        async with self.db() as session:
            count = (
                await session.exec(
                    select(func.count())
                    .select_from(ScheduledJob)
                    .where(ScheduledJob.instance_id == instance.id)
                )
            ).one()
            if count >= self.settings.jobs_per_instance:
                raise Conflict(
                    f"an instance may have at most {self.settings.jobs_per_instance} jobs"
                )
            now = utcnow()
            job = ScheduledJob(
                instance_id=instance.id,
                schedule=schedule,
                method=data.method,
                path=data.path,
                headers=dict(data.headers),
                body=data.body,
                timeout_s=data.timeout_s,
                paused=data.paused,
                created_at=now,
                updated_at=now,
                anchored_at=now,
            )
            session.add(job)
            await session.commit()
        self._schedule(job)
        return job

    async def list_for(self, account: Account, name: str) -> Sequence[ScheduledJob]:
        instance = await self.instances.get(account, name)
        async with self.db() as session:
            return (
                await session.exec(
                    select(ScheduledJob)
                    .where(ScheduledJob.instance_id == instance.id)
                    .order_by(col(ScheduledJob.created_at), col(ScheduledJob.id))
                )
            ).all()

    async def get(self, account: Account, name: str, job_id: str) -> ScheduledJob:
        instance = await self.instances.get(account, name)
        async with self.db() as session:
            job = await session.get(ScheduledJob, job_id)
        if job is None or job.instance_id != instance.id:
            raise NotFound(f"{name} has no such job")
        return job

    async def update(
        self, account: Account, name: str, job_id: str, data: JobUpdate
    ) -> ScheduledJob:
        found = await self.get(account, name, job_id)
        given = {
            key for key in data.model_fields_set if key == "body" or getattr(data, key) is not None
        }
        schedule = self._schedule_text(data.schedule) if data.schedule is not None else None
        async with self.db() as session:
            job = await session.get(ScheduledJob, found.id)
            if job is None:
                raise NotFound(f"{name} has no such job")
            for key in given - {"schedule"}:
                setattr(job, key, getattr(data, key))
            self._check_body(job.method, job.body)
            now = utcnow()
            if schedule is not None and schedule != job.schedule:
                job.schedule, job.anchored_at = schedule, now
            job.updated_at = now
            session.add(job)
            await session.commit()
        self._schedule(job)
        return job

    async def delete(self, account: Account, name: str, job_id: str) -> None:
        job = await self.get(account, name, job_id)
        await self._forget([job.id])

    async def runs(self, account: Account, name: str, job_id: str, limit: int) -> Sequence[JobRun]:
        job = await self.get(account, name, job_id)
        async with self.db() as session:
            return (
                await session.exec(
                    select(JobRun)
                    .where(JobRun.job_id == job.id)
                    .order_by(col(JobRun.id).desc())
                    .limit(limit)
                )
            ).all()

    async def recent_runs(self, account: Account, name: str, limit: int) -> Sequence[JobRun]:
        """The newest runs of all the instance's jobs, newest first."""
        instance = await self.instances.get(account, name)
        async with self.db() as session:
            return (
                await session.exec(
                    select(JobRun)
                    .join(ScheduledJob, col(ScheduledJob.id) == col(JobRun.job_id))
                    .where(ScheduledJob.instance_id == instance.id)
                    .order_by(col(JobRun.id).desc())
                    .limit(limit)
                )
            ).all()

    def next_run(self, job: ScheduledJob, now: datetime | None = None) -> datetime | None:
        """When the job fires next (None: paused)."""
        if job.paused:
            return None
        try:
            schedule = parse_schedule(job.schedule)
        except ScheduleError:
            return None
        return schedule.next_run(job.anchored_at, now or utcnow())

    # ----- the scheduler

    def _schedule(self, job: ScheduledJob) -> None:
        """Make the scheduler fire the job on its schedule, or not at all if it is paused."""
        if self._scheduler is None:
            return  # `start` adds it
        if job.paused:
            self._scheduler.remove(scheduler_id(job.id))
            return
        try:
            trigger = parse_schedule(job.schedule).trigger(job.anchored_at)
        except ScheduleError:
            log.warning("job %s has a schedule that no longer parses; not scheduled", job.id)
            return
        self._scheduler.add(scheduler_id(job.id), trigger, functools.partial(self.fire, job.id))

    async def start(self, scheduler: Scheduler) -> None:
        """Fire every job that is not paused on its schedule (from now on, also those created
        later); the jobs of deleted instances are removed first."""
        self._scheduler = scheduler
        try:
            await self.forget_deleted()
            async with self.db() as session:
                jobs = (
                    await session.exec(
                        select(ScheduledJob).where(col(ScheduledJob.paused).is_(False))
                    )
                ).all()
        except Exception:
            log.exception("scheduled jobs could not be loaded; they run after a restart")
            return
        for job in jobs:
            self._schedule(job)

    async def forget_deleted(self) -> int:
        """Remove the jobs (and runs) of deleted instances; how many were removed."""
        async with self.db() as session:
            ids = (
                await session.exec(
                    select(ScheduledJob.id)
                    .join(Instance, col(Instance.id) == col(ScheduledJob.instance_id))
                    .where(Instance.status == InstanceState.DELETED.value)
                )
            ).all()
        if ids:
            await self._forget(list(ids))
        return len(ids)

    async def _forget(self, job_ids: list[str]) -> None:
        async with self.db() as session:
            await session.exec(delete(JobRun).where(col(JobRun.job_id).in_(job_ids)))
            await session.exec(delete(ScheduledJob).where(col(ScheduledJob.id).in_(job_ids)))
            await session.commit()
        if self._scheduler is not None:
            for job_id in job_ids:
                self._scheduler.remove(scheduler_id(job_id))

    async def fire(self, job_id: str) -> None:
        """One run of the job, recorded (see the module's docstring)."""
        if self._closing:
            return
        if job_id in self._running:
            log.info("job %s is still running; this run is skipped", job_id)
            return
        task = asyncio.current_task()
        self._running.add(job_id)
        if task is not None:
            self._runs.add(task)
        try:
            await self._run(job_id)
        finally:
            self._running.discard(job_id)
            if task is not None:
                self._runs.discard(task)

    async def _run(self, job_id: str) -> None:
        async with self.db() as session:
            job = await session.get(ScheduledJob, job_id)
            instance = await session.get(Instance, job.instance_id) if job else None
        if job is None or job.paused:
            if self._scheduler is not None:
                self._scheduler.remove(scheduler_id(job_id))
            return
        if instance is None or instance.status == InstanceState.DELETED or not instance.name:
            await self._forget([job_id])
            return
        started = utcnow()
        if instance.desired == "stopped":
            outcome = RunOutcome("error", None, "", STOPPED_ERROR, attempts=0, duration_ms=0)
        else:
            outcome = await self.runner.run(
                JobRequest(
                    job_id=job.id,
                    host=self.settings.instance_host(instance.name),
                    method=job.method,
                    path=job.path,
                    headers=job.headers,
                    body=job.body,
                    timeout_s=job.timeout_s,
                )
            )
        await self._record(job_id, started, outcome)

    async def _record(self, job_id: str, started: datetime, outcome: RunOutcome) -> None:
        """Keep the run (unless its job was deleted meanwhile) and prune the oldest."""
        async with self.db() as session:
            job = await session.get(ScheduledJob, job_id)
            if job is None:
                return
            session.add(
                JobRun(
                    job_id=job_id,
                    started_at=started,
                    status=outcome.status,
                    http_status=outcome.http_status,
                    duration_ms=outcome.duration_ms,
                    attempts=outcome.attempts,
                    response=outcome.response,
                    error=outcome.error,
                )
            )
            job.last_run_at, job.last_status = started, outcome.status
            session.add(job)
            await session.flush()
            newest_dropped = (
                await session.exec(
                    select(JobRun.id)
                    .where(JobRun.job_id == job_id)
                    .order_by(col(JobRun.id).desc())
                    .offset(self.settings.job_runs_keep)
                    .limit(1)
                )
            ).first()
            if newest_dropped is not None:
                await session.exec(
                    delete(JobRun).where(
                        col(JobRun.job_id) == job_id, col(JobRun.id) <= newest_dropped
                    )
                )
            await session.commit()

    async def aclose(self) -> None:
        """Stop running jobs (runs in progress are cancelled and not recorded)."""
        self._closing = True
        for task in list(self._runs):
            task.cancel()
        for task in list(self._runs):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.runner.aclose()
