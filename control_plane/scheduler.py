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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[object]]
PERSISTENT = "persistent"


class Scheduler:
    def __init__(self) -> None:
        self._scheduler = AsyncIOScheduler(
            timezone=UTC,
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        self._persistent: Any = None

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
        from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

        if self._persistent is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._persistent = SQLAlchemyJobStore(url=f"sqlite:///{path.absolute()}")
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

    def persistent_jobs(self) -> dict[str, tuple[str, datetime | None]]:
        """Persistent jobs by id: (name, next run time)."""
        if self._persistent is None:
            return {}
        return {
            job.id: (job.name, job.next_run_time)
            for job in self._scheduler.get_jobs(jobstore=PERSISTENT)
        }

    def remove(self, job_id: str) -> None:
        """Remove a job (idempotent)."""
        from apscheduler.jobstores.base import JobLookupError

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
