"""Generation jobs: create one, follow it, list mine."""

from __future__ import annotations

from fastapi import APIRouter

from museforge.store import Job
from museforge.web.actions import own_job, submit_job
from museforge.web.deps import ApiWriterDep, ServicesDep, VisitorDep
from museforge.web.families import JobRequest

router = APIRouter(prefix="/jobs", tags=["jobs"])


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
def get_job(job_id: str, services: ServicesDep, visitor: VisitorDep) -> dict:
    return job_json(own_job(services, visitor, job_id))
