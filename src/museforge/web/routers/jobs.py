"""Generation jobs: create one, follow it, list mine."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from museforge.store import Job
from museforge.web.actions import own_job, submit_job
from museforge.web.deps import ApiWriterDep, ServicesDep, VisitorDep
from museforge.web.requests import JobRequest

router = APIRouter(prefix="/jobs", tags=["jobs"])
MAX_WAIT_S = 30.0
WAIT_STEP_S = 0.05  # how often a waiting request looks at the job's change counter (in memory)
STORE_RECHECK_S = 1.0  # and at the store, for jobs that workers of another process run


def job_json(job: Job) -> dict:
    return {
        "id": job.id,
        "model": job.model,
        "operation": job.operation,
        "params": job.params,
        "status": job.status,
        "progress": job.progress,
        "error": job.error,
        "song_ids": job.song_ids,
        "song_urls": [f"/api/v1/songs/{s}" for s in job.song_ids],
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "url": f"/api/v1/jobs/{job.id}",
        "page": f"/jobs/{job.id}",
    }


@router.post("", status_code=202)
def create_job(request: JobRequest, services: ServicesDep, visitor: ApiWriterDep) -> dict:
    """Queue a generation; follow it at the returned ``url`` until ``status`` is done or failed."""
    return job_json(submit_job(services, visitor, request))


@router.get("")
def list_jobs(services: ServicesDep, visitor: VisitorDep, limit: int = 50) -> dict:
    jobs = services.repo.list_jobs(owner=visitor.owner, limit=max(1, min(limit, 500)))
    return {"jobs": [job_json(j) for j in jobs]}


@router.get("/{job_id}")
async def get_job(
    job_id: str,
    services: ServicesDep,
    visitor: VisitorDep,
    wait: Annotated[
        float,
        Query(
            ge=0,
            le=MAX_WAIT_S,
            allow_inf_nan=False,
            description="Seconds to hold the answer until the job changes (progress, done, failed); 0 answers "
            "at once. Following a job with wait=10 hears of its end at once, without polling.",
        ),
    ] = 0.0,
) -> dict:
    job = await run_in_threadpool(own_job, services, visitor, job_id)
    if wait > 0 and job.status in ("queued", "running"):
        seen = services.queue.version(job_id)
        state = (job.status, job.progress)
        now = time.monotonic()
        deadline, next_read = now + wait, now + STORE_RECHECK_S
        while now < deadline and services.queue.version(job_id) == seen:
            if now >= next_read:
                fresh = await run_in_threadpool(own_job, services, visitor, job_id)
                if (fresh.status, fresh.progress) != state:
                    break
                next_read = now + STORE_RECHECK_S
            await asyncio.sleep(WAIT_STEP_S)
            now = time.monotonic()
        job = await run_in_threadpool(own_job, services, visitor, job_id)
    return job_json(job)
