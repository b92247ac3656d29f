"""The worker side of the distributed queue (`museforge worker`): a Celery worker process that loads the models
once, keeps them warm, and runs the jobs whose ids the web processes publish (`museforge.web.queue`).

Its pool is threads, not processes: every job of the worker shares the one copy of each model, and jobs for the
same model can be decoded together (``batching``). A job is claimed in the store before it runs; a message
delivered again (its worker was killed before acknowledging it) finds the job running and takes it over while
the job has attempts left, else the store fails it with the reason. A job already done is not run again.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from celery import Celery

from museforge.store import FileStore, open_repository
from museforge.web.catalog import ModelCatalog
from museforge.web.jobs import JobExecutor
from museforge.web.lab_schedule import LabCycle, lab_models
from museforge.web.queue import GENERATE_TASK, LAB_CYCLE_TASK, QUEUES, celery_app
from museforge.web.settings import Settings

log = logging.getLogger(__name__)


class WorkerJobs:
    """What one worker process holds: the store, the models (loaded at start, kept warm) and the executor."""

    def __init__(self, settings: Settings, batching: bool) -> None:
        var = settings.var_dir.resolve()
        var.mkdir(parents=True, exist_ok=True)
        self.repo = open_repository(var, settings.mongo_uri, settings.mongo_db)
        catalog = ModelCatalog(settings.models_dir, settings.device, settings.precision, var, batching)
        self.executor = JobExecutor(self.repo, FileStore(var), catalog)
        self.max_attempts = settings.max_attempts
        self.lab = LabCycle(settings, self.repo)
        self.lab_models = lab_models(settings, catalog)
        log.info(
            "worker pid %d: models %s loaded on %s", os.getpid(), ", ".join(catalog.models), settings.device
        )

    def generate(self, job_id: str) -> None:
        job = self.repo.claim_job_id(job_id=job_id, max_attempts=self.max_attempts)
        if job is None:
            log.info("job %s: nothing to run (done, failed or out of attempts)", job_id)
            return
        log.info("job %s started in pid %d (attempt %d)", job.id, os.getpid(), job.attempts)
        self.executor.run(job)
        ended = self.repo.get_job(job_id=job.id)
        log.info("job %s ended in pid %d: %s", job.id, os.getpid(), ended.status if ended else "gone")

    def lab_cycle(self) -> None:
        for model in self.lab_models:
            self.lab.run(model)


def worker_app(settings: Settings, batching: bool) -> Celery:
    """The Celery app with this process's tasks bound to its warm models."""
    app = celery_app(settings)
    jobs = WorkerJobs(settings, batching)

    @app.task(name=GENERATE_TASK)
    def generate(job_id: str) -> None:
        jobs.generate(job_id)

    @app.task(name=LAB_CYCLE_TASK)
    def lab_cycle() -> None:
        jobs.lab_cycle()

    return app


def worker_argv(queues: Sequence[str], concurrency: int, beat: Path | None) -> list[str]:
    """The Celery worker's command line: a threads pool of ``concurrency`` slots on ``queues``, and with
    ``beat`` (its schedule file) the deployment's one scheduler inside this worker."""
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown or not queues:
        raise ValueError(
            f"unknown queue(s) {', '.join(unknown) or '(none given)'}; queues: {', '.join(QUEUES)}"
        )
    argv = [
        "worker", "--pool=threads", f"--concurrency={concurrency}", f"--queues={','.join(queues)}",
        "--loglevel=INFO", "--without-gossip", "--without-mingle", f"--hostname=museforge-{os.getpid()}@%h",
    ]  # fmt: skip
    if beat is not None:
        beat.parent.mkdir(parents=True, exist_ok=True)
        argv += ["--beat", f"--schedule={beat}"]
    return argv


def run_worker(
    settings: Settings, queues: Sequence[str], concurrency: int, batching: bool, beat: bool
) -> None:
    """Run a worker until it is stopped (SIGTERM or Ctrl-C: running jobs finish first)."""
    schedule = settings.var_dir.resolve() / "resource" / "queue" / "beat-schedule" if beat else None
    argv = worker_argv(queues, concurrency, schedule)
    worker_app(settings, batching).worker_main(argv)
