"""An instance's scheduled jobs and their latest runs as its page shows them (the `_jobs.html`
partial)."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from control_plane.db.models import Account
from control_plane.jobs.schemas import METHODS
from dashboard.web import cp_of

RECENT_RUNS = 10
ANSWER_SHOWN = 120  # characters of an answer in the runs table


async def job_views(request: Request, account: Account, name: str) -> dict[str, Any]:
    """`jobs` (each with its next run) and `runs` (the newest of all of them), for the page."""
    jobs = cp_of(request).jobs
    rows = await jobs.list_for(account, name)
    return {
        "jobs": [
            {
                "id": job.id,
                "schedule": job.schedule,
                "request": f"{job.method} {job.path}",
                "paused": job.paused,
                "next_run": jobs.next_run(job),
                "last_status": job.last_status,
            }
            for job in rows
        ],
        "runs": [
            {
                "job_id": run.job_id,
                "started": run.started_at,
                "status": run.status,
                "ok": run.http_status is not None and run.http_status < 400,
                "duration_ms": run.duration_ms,
                "attempts": run.attempts,
                "answer": " ".join((run.error or run.response).split())[:ANSWER_SHOWN],
            }
            for run in await jobs.recent_runs(account, name, RECENT_RUNS)
        ],
        "methods": METHODS,
    }
