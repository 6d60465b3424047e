"""The control plane's periodic jobs, on APScheduler (`AsyncIOScheduler`, in-memory jobs).

Jobs keep no state of their own: what matters lives in the control DB, and a job reads and
writes it through services (the idle sweep writes desired state; the reconciler acts on it).
So the job store is the default in-memory one and jobs are added again at every start.

Contract: `every(job_id, seconds, func)` and `add(job_id, trigger, func)` run the coroutine
function `func()` on the event loop of `start()`; one run of a job at a time (a run still going
when the next is due makes that one skip), missed runs coalesce into one, and an exception is
logged and never stops the schedule. Adding a job with an existing id replaces it.

Persistent jobs (`persist_to` + `add_persistent`): for jobs whose timing must survive restarts
(snapshot schedules), kept in a SQLite file of their own (whatever the control DB is). Their
function is a textual reference `"module:function"` called with picklable `args`; a run that
was due while the control plane was down runs once when it is back (coalesced, never dropped).

Cost: the persistent jobs' names and next run times are kept in memory (`IndexedJobStore`),
read from the file once when the store starts and then kept in step with every write the
scheduler makes to it (a job added, replaced, fired or removed). `persistent_jobs()` and
`next_run_time(job_id)` never read the file: the fleet's overview asks for the next run of
every instance, which costs one dictionary look-up each (unpickling every job for each
instance was quadratic in the fleet).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from apscheduler.job import Job as APJob
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]
PERSISTENT = "persistent"
JobIndex = dict[str, tuple[str, datetime | None]]  # job id -> (name, next run time)


class IndexedJobStore(SQLAlchemyJobStore):  # type: ignore[misc]  # APScheduler is untyped
    """APScheduler's SQLAlchemy job store with its jobs' names and next run times in memory.

    `index` is None until the store starts (and again once it is shut down); from its start
    it holds every job in the table: filled by one read of them all, then updated by each
    `add_job`, `update_job` (a replacement, a pause, the next run time after a fire),
    `remove_job` and `remove_all_jobs`, after the write succeeded (a job the table no longer
    has leaves it too). A job the scheduler fails to unpickle, which APScheduler deletes from
    the table itself, leaves it by a read of the ids that remain. Every write goes through the
    scheduler's job store lock or the event loop, as the table's own writes do."""

    def __init__(self, url: str) -> None:
        super().__init__(url=url)
        self.index: JobIndex | None = None
        self._unrestorable = False

    def start(self, scheduler: Any, alias: str) -> None:
        super().start(scheduler, alias)
        self.index = {job.id: (job.name, job.next_run_time) for job in self._get_jobs()}

    def shutdown(self) -> None:
        self.index = None
        super().shutdown()

    def _note(self, job: APJob) -> None:
        if self.index is not None:
            self.index[job.id] = (job.name, job.next_run_time)

    def _forget(self, job_id: str) -> None:
        if self.index is not None:
            self.index.pop(job_id, None)

    def add_job(self, job: APJob) -> None:
        super().add_job(job)  # ConflictingIdError: the table (and the index) keep the old one
        self._note(job)

    def update_job(self, job: APJob) -> None:
        try:
            super().update_job(job)
        except JobLookupError:
            self._forget(job.id)
            raise
        self._note(job)

    def remove_job(self, job_id: str) -> None:
        try:
            super().remove_job(job_id)
        finally:
            self._forget(job_id)

    def remove_all_jobs(self) -> None:
        super().remove_all_jobs()
        if self.index is not None:
            self.index.clear()

    def _reconstitute_job(self, job_state: bytes) -> APJob:
        try:
            return super()._reconstitute_job(job_state)
        except BaseException:
            self._unrestorable = True
            raise

    def _get_jobs(self, *conditions: Any) -> list[APJob]:
        self._unrestorable = False
        jobs: list[APJob] = super()._get_jobs(*conditions)
        if self._unrestorable and self.index is not None:  # deleted from the table just now
            with self.engine.begin() as connection:
                kept = set(connection.execute(sa.select(self.jobs_t.c.id)).scalars())
            self.index = {key: value for key, value in self.index.items() if key in kept}
        return jobs


class Scheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._persistent: IndexedJobStore | None = None

    def every(self, job_id: str, seconds: float, func: Job) -> None:
        """Run `func` every `seconds` seconds (the first run one interval after start)."""
        self.add(job_id, IntervalTrigger(seconds=seconds, timezone=UTC), func)

    def add(self, job_id: str, trigger: Any, func: Job) -> None:
        """Run `func` whenever the APScheduler `trigger` fires."""

        async def run() -> None:
            try:
                await func()
            except Exception:
                log.exception("scheduled job %s failed", job_id)

        self._scheduler.add_job(run, trigger, id=job_id, name=job_id, replace_existing=True)

    def persist_to(self, path: Path) -> None:
        """Keep persistent jobs in the SQLite file `path` (idempotent)."""
        if self._persistent is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._persistent = IndexedJobStore(url=f"sqlite:///{path.absolute()}")
            self._scheduler.add_jobstore(self._persistent, PERSISTENT)

    def add_persistent(
        self, job_id: str, trigger: Any, func_ref: str, args: list[Any], name: str
    ) -> None:
        """Add (or replace) the persistent job `job_id`: `func_ref(*args)` when `trigger` fires."""
        self._scheduler.add_job(
            func_ref,
            trigger,
            args=args,
            id=job_id,
            name=name,
            jobstore=PERSISTENT,
            replace_existing=True,
        )

    def persistent_jobs(self) -> JobIndex:
        """Persistent jobs by id: (name, next run time). From memory once the scheduler runs
        (see the module's docstring)."""
        if self._persistent is None:
            return {}
        if self._persistent.index is not None:
            return dict(self._persistent.index)
        # not started (or shut down): the jobs waiting to be added, as APScheduler has them
        return {
            job.id: (job.name, getattr(job, "next_run_time", None))
            for job in self._scheduler.get_jobs(jobstore=PERSISTENT)
        }

    def next_run_time(self, job_id: str) -> datetime | None:
        """When the persistent job `job_id` fires next (None: no such job, or paused)."""
        if self._persistent is not None and self._persistent.index is not None:
            return self._persistent.index.get(job_id, ("", None))[1]
        return self.persistent_jobs().get(job_id, ("", None))[1]

    def remove(self, job_id: str) -> None:
        """Remove a job (idempotent)."""
        with contextlib.suppress(JobLookupError):
            self._scheduler.remove_job(job_id)

    def job_ids(self) -> list[str]:
        return sorted(job.id for job in self._scheduler.get_jobs())

    def start(self) -> None:
        """Start firing jobs (call from the running event loop)."""
        if not self._scheduler.running:
            self._scheduler.start()

    def shutdown(self) -> None:
        """Stop firing jobs; runs in progress finish on their own."""
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)
