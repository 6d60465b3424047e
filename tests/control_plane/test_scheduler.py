"""The scheduler's persistent jobs: the names and next run times it keeps in memory
(`IndexedJobStore`) agree with what APScheduler has in the job file, after adds,
replacements, removals, fires, a restart, and a job APScheduler cannot unpickle."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from control_plane.scheduler import JobIndex, Scheduler

# a job function that does nothing without a running backup service (it logs a warning)
FUNC = "control_plane.backups.jobs:scheduled_snapshot"


def stored(path: Path) -> JobIndex:
    """The persistent jobs as APScheduler's own SQLAlchemy store reads them from the file."""
    store = SQLAlchemyJobStore(url=f"sqlite:///{path}")
    store.start(BackgroundScheduler(timezone=UTC), "check")  # a scheduler that never runs
    try:
        return {job.id: (job.name, job.next_run_time) for job in store.get_all_jobs()}
    finally:
        store.shutdown()


def stored_ids(path: Path) -> set[str]:
    """The ids of the rows in the file (read without unpickling: a store that reads a job it
    cannot restore deletes it)."""
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            return set(connection.execute(sa.text("SELECT id FROM apscheduler_jobs")).scalars())
    finally:
        engine.dispose()


def agrees(scheduler: Scheduler, path: Path) -> JobIndex:
    """The index, checked against the file (all jobs, and each job's next run time)."""
    truth = stored(path)
    assert scheduler.persistent_jobs() == truth
    for job_id, (_, when) in truth.items():
        assert scheduler.next_run_time(job_id) == when
    return truth


async def _noop() -> None:
    return None


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


@pytest.fixture
async def started(tmp_path: Path) -> AsyncIterator[tuple[Scheduler, Path]]:
    path = tmp_path / "scheduler.db"
    scheduler = Scheduler()
    scheduler.start()
    scheduler.persist_to(path)
    try:
        yield scheduler, path
    finally:
        scheduler.shutdown()


async def test_adds_replacements_and_removals_keep_the_index_in_step(
    started: tuple[Scheduler, Path],
) -> None:
    scheduler, path = started
    assert agrees(scheduler, path) == {}
    later = datetime.now(UTC) + timedelta(days=3)
    scheduler.add_persistent("a", IntervalTrigger(hours=1, timezone=UTC), FUNC, ["a"], "every hour")
    scheduler.add_persistent("b", CronTrigger(hour=3, timezone=UTC), FUNC, ["b"], "at three")
    scheduler.add_persistent("c", DateTrigger(later, timezone=UTC), FUNC, ["c"], "once")
    truth = agrees(scheduler, path)
    assert set(truth) == {"a", "b", "c"} and truth["c"] == ("once", later)

    # replaced: a new trigger and name, the same id
    scheduler.add_persistent("a", CronTrigger(minute=7, timezone=UTC), FUNC, ["a"], "at :07")
    truth = agrees(scheduler, path)
    assert truth["a"][0] == "at :07" and truth["a"][1] is not None and truth["a"][1].minute == 7

    scheduler.remove("b")
    scheduler.remove("b")  # idempotent
    scheduler.remove("never-added")
    truth = agrees(scheduler, path)
    assert set(truth) == {"a", "c"}
    assert scheduler.next_run_time("b") is None
    assert scheduler.next_run_time("never-added") is None

    # in-memory jobs are not persistent ones
    scheduler.every("tick", 3600, _noop)
    assert set(agrees(scheduler, path)) == {"a", "c"}


async def test_a_fired_job_moves_to_its_next_run_in_the_index(
    started: tuple[Scheduler, Path],
) -> None:
    scheduler, path = started
    scheduler.add_persistent("fast", IntervalTrigger(seconds=1, timezone=UTC), FUNC, ["x"], "1 s")
    first = agrees(scheduler, path)["fast"][1]
    assert first is not None
    # APScheduler fires it and writes its next run time to the file: the index follows
    await eventually(lambda: stored(path)["fast"][1] != first)
    await eventually(lambda: scheduler.next_run_time("fast") != first)
    agrees(scheduler, path)


async def test_a_restarted_scheduler_reads_the_jobs_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "scheduler.db"
    first = Scheduler()
    first.start()
    first.persist_to(path)
    first.add_persistent("a", CronTrigger(hour=1, timezone=UTC), FUNC, ["a"], "at one")
    first.add_persistent("b", CronTrigger(hour=2, timezone=UTC), FUNC, ["b"], "at two")
    before = agrees(first, path)
    first.shutdown()
    await asyncio.sleep(0.05)  # APScheduler shuts down on the event loop's next turn
    assert first.persistent_jobs() == {}  # as APScheduler answers for a scheduler shut down

    again = Scheduler()
    again.start()
    again.persist_to(path)
    try:
        assert agrees(again, path) == before
        again.remove("a")
        assert set(agrees(again, path)) == {"b"}
    finally:
        again.shutdown()


async def test_a_job_that_cannot_be_unpickled_leaves_the_index_with_its_row(
    started: tuple[Scheduler, Path],
) -> None:
    """APScheduler deletes a job it cannot restore (its function is gone) when it reads it
    to fire it; the index drops it too, and keeps the others."""
    scheduler, path = started
    scheduler.add_persistent("keep", CronTrigger(hour=4, timezone=UTC), FUNC, ["k"], "at four")
    scheduler.add_persistent("gone", IntervalTrigger(seconds=1, timezone=UTC), FUNC, ["g"], "1 s")
    agrees(scheduler, path)
    engine = sa.create_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as connection:
            table = sa.table("apscheduler_jobs", sa.column("id"), sa.column("job_state"))
            raw = connection.execute(
                sa.select(table.c.job_state).where(table.c.id == "gone")
            ).scalar_one()
            state = pickle.loads(raw)
            state["func"] = "tests_no_such_module_here:nothing"
            connection.execute(
                sa.update(table).where(table.c.id == "gone").values(job_state=pickle.dumps(state))
            )
    finally:
        engine.dispose()
    assert "gone" in scheduler.persistent_jobs()
    await eventually(lambda: "gone" not in stored_ids(path))  # when it was due
    assert "gone" not in scheduler.persistent_jobs()
    assert set(agrees(scheduler, path)) == {"keep"}
    assert scheduler.next_run_time("gone") is None
