"""Scheduled jobs of an instance: HTTP requests to its own routes on a schedule, run by the
platform through the proxy (a sleeping instance wakes for them), and their recorded runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query, Response, status

from control_plane.api.deps import CP, CurrentAccount
from control_plane.api.errors import error_responses
from control_plane.api.routing import api_router
from control_plane.jobs.models import JobRun, ScheduledJob
from control_plane.jobs.schemas import MASK, JobCreate, JobPublic, JobRunPublic, JobUpdate
from control_plane.jobs.service import JobService

router = api_router("jobs", 401, 403, 404)

JobId = Annotated[str, Path(max_length=64)]


def job_public(jobs: JobService, job: ScheduledJob, name: str) -> JobPublic:
    return JobPublic(
        id=job.id,
        instance=name,
        schedule=job.schedule,
        method=job.method,
        path=job.path,
        headers=dict.fromkeys(job.headers, MASK),
        body_bytes=len(job.body.encode()) if job.body is not None else None,
        timeout_s=job.timeout_s,
        paused=job.paused,
        next_run=jobs.next_run(job),
        created=job.created_at,
        updated=job.updated_at,
        last_run=job.last_run_at,
        last_status=job.last_status or None,
    )


def run_public(run: JobRun) -> JobRunPublic:
    assert run.id is not None
    return JobRunPublic(
        id=run.id,
        job_id=run.job_id,
        started=run.started_at,
        status=run.status,
        http_status=run.http_status,
        duration_ms=run.duration_ms,
        attempts=run.attempts,
        response=run.response,
        error=run.error,
    )


@router.post(
    "/api/instances/{name}/jobs",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(409),
)
async def add_job(cp: CP, account: CurrentAccount, name: str, data: JobCreate) -> JobPublic:
    """Schedule a request to the instance's route `path` (409: it has as many jobs as it may)."""
    return job_public(cp.jobs, await cp.jobs.create(account, name, data), name)


@router.get("/api/instances/{name}/jobs")
async def list_jobs(cp: CP, account: CurrentAccount, name: str) -> list[JobPublic]:
    return [job_public(cp.jobs, job, name) for job in await cp.jobs.list_for(account, name)]


@router.get("/api/instances/{name}/jobs/{job_id}")
async def get_job(cp: CP, account: CurrentAccount, name: str, job_id: JobId) -> JobPublic:
    return job_public(cp.jobs, await cp.jobs.get(account, name, job_id), name)


@router.patch("/api/instances/{name}/jobs/{job_id}")
async def update_job(
    cp: CP, account: CurrentAccount, name: str, job_id: JobId, data: JobUpdate
) -> JobPublic:
    """Change a job (`paused: true` stops its runs, `false` resumes them)."""
    return job_public(cp.jobs, await cp.jobs.update(account, name, job_id, data), name)


@router.delete("/api/instances/{name}/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(cp: CP, account: CurrentAccount, name: str, job_id: JobId) -> Response:
    """Remove the job and its runs (a run in progress ends unrecorded)."""
    await cp.jobs.delete(account, name, job_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/api/instances/{name}/jobs/{job_id}/runs")
async def list_runs(
    cp: CP,
    account: CurrentAccount,
    name: str,
    job_id: JobId,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[JobRunPublic]:
    """The job's runs, newest first (the newest `PF_JOB_RUNS_KEEP` are kept)."""
    return [run_public(run) for run in await cp.jobs.runs(account, name, job_id, limit)]
