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
from typing import Any

from celery import Celery, bootsteps

from museforge.store import FileStore, open_repository
from museforge.web.catalog import ModelCatalog
from museforge.web.jobs import JobExecutor
from museforge.web.lab_schedule import LabCycle, lab_models
from museforge.web.queue import GENERATE_TASK, LAB_CYCLE_TASK, QUEUES, PublishedWatch, celery_app
from museforge.web.settings import Settings

log = logging.getLogger(__name__)
WAKE_S = 0.05  # how often the worker's event loop looks again for a message a finished job made room for


class QuickWake(bootsteps.StartStopStep):
    """Keep the consumer's event loop turning every `WAKE_S`.

    A threads pool wakes nothing when a job ends (a process pool's pipes do), so the loop asked Redis for the
    next message only when its own next timer fired: a second or two of idle worker per job. A consumer step,
    so it is set again when the consumer restarts after a lost connection."""

    def start(self, parent: Any) -> None:
        if parent.hub is not None:
            parent.hub.call_repeatedly(WAKE_S, _nothing)


def _nothing() -> None:
    """A timer entry whose only work is waking the loop."""


class WorkerJobs:
    """What one worker process holds: the store, the models (loaded at start, kept warm) and the executor."""

    def __init__(self, settings: Settings, batching: bool) -> None:
        var = settings.var_dir.resolve()
        var.mkdir(parents=True, exist_ok=True)
        self.repo = open_repository(var, settings.mongo_uri, settings.mongo_db)
        catalog = ModelCatalog(settings.models_dir, settings.device, settings.precision, var, batching)
        assert settings.queue_url is not None
        watch = PublishedWatch(settings.queue_url)
        self.executor = JobExecutor(self.repo, FileStore(var), catalog, watch)
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
    app.steps["consumer"].add(QuickWake)
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
