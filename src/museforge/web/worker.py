"""The worker side of the distributed queue (`museforge worker`): a Celery worker process that loads the models
once, keeps them warm, and runs the jobs whose ids the web processes publish (`museforge.web.queue`).

Its pool is threads, not processes: every job of the worker shares the one copy of each model, and jobs for the
same model can be decoded together (``batching``). A job is claimed in the store under the worker's name before
it runs, and the worker's `Keepalive` marks its jobs alive every heartbeat. A job that falls silent lost its
worker (killed, out of memory, machine gone): any live worker puts it back on the queue while it has attempts
left, else the store fails it with the reason. A message delivered twice finds its job alive elsewhere, or
done, and runs nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import Celery, bootsteps

from museforge.store import FileStore, Repository, open_repository
from museforge.web.catalog import ModelCatalog
from museforge.web.jobs import JobExecutor
from museforge.web.lab_schedule import LabCycle, lab_models
from museforge.web.queue import (
    GENERATE_TASK,
    LAB_CYCLE_TASK,
    QUEUES,
    BrokerUnavailable,
    PublishedWatch,
    celery_app,
    publish_job,
)
from museforge.web.settings import Settings

log = logging.getLogger(__name__)
WAKE_S = 0.05  # how often the worker's event loop looks again for a message a finished job made room for
STALE_BEATS = 5  # heartbeats a job may miss before its worker counts as dead


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


class Keepalive:
    """The heartbeat of the jobs this worker runs, and the reaper of jobs whose worker died.

    Every ``every_s`` a thread marks this worker's jobs alive in the store, then re-queues and publishes again
    the jobs that went `STALE_BEATS` heartbeats without one (their worker was killed mid-job), or fails those
    out of attempts. So a killed worker's job is taken over within seconds, by whichever worker is alive,
    instead of after the broker's visibility timeout, which must outlast the longest job."""

    def __init__(
        self, repo: Repository, every_s: float, max_attempts: int, publish: Callable[[str], None],
        changed: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.repo, self.every_s, self.max_attempts = repo, every_s, max_attempts
        self.publish, self.changed = publish, changed
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="museforge-keepalive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def stale_before(self) -> float:
        """A job whose last heartbeat is older than this lost its worker."""
        return time.time() - STALE_BEATS * self.every_s

    @contextmanager
    def holding(self, job_id: str) -> Iterator[None]:
        """Beat for ``job_id`` while the block runs it."""
        with self._lock:
            self._held.add(job_id)
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(job_id)

    def beat(self) -> None:
        """One heartbeat for the held jobs, then one round of reaping."""
        with self._lock:
            held = sorted(self._held)
        self.repo.beat_jobs(job_ids=held, holder=self.holder)
        requeued, failed = self.repo.reap_jobs(
            stale_before=self.stale_before(), max_attempts=self.max_attempts
        )
        for job_id in requeued:
            log.warning("job %s lost its worker: queued again", job_id)
            try:
                self.publish(job_id)
            except BrokerUnavailable as exc:  # the message the dead worker never acknowledged is the backstop
                log.warning("job %s: not published again (%s)", job_id, exc)
            self.changed(job_id)
        for job_id in failed:
            log.warning("job %s lost its worker with no attempts left: failed", job_id)
            self.changed(job_id)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.beat()
            except Exception as exc:  # the store or the broker is away now: try again next beat
                log.warning("heartbeat: %s", exc)


class WorkerJobs:
    """What one worker process holds: the store, the models (loaded at start, kept warm), the executor and
    the keepalive of the jobs it runs."""

    def __init__(self, settings: Settings, batching: bool, publish: Callable[[str], None]) -> None:
        var = settings.var_dir.resolve()
        var.mkdir(parents=True, exist_ok=True)
        self.repo = open_repository(var, settings.mongo_uri, settings.mongo_db)
        catalog = ModelCatalog(settings.models_dir, settings.device, settings.precision, var, batching)
        assert settings.queue_url is not None
        watch = PublishedWatch(settings.queue_url)
        self.executor = JobExecutor(self.repo, FileStore(var), catalog, watch)
        self.max_attempts = settings.max_attempts
        self.keepalive = Keepalive(
            self.repo, settings.queue_heartbeat_s, self.max_attempts, publish, watch.bump
        )
        self.lab = LabCycle(settings, self.repo)
        self.lab_models = lab_models(settings, catalog)
        self.keepalive.start()
        log.info(
            "worker pid %d: models %s loaded on %s", os.getpid(), ", ".join(catalog.models), settings.device
        )

    def generate(self, job_id: str) -> None:
        job = self.repo.claim_job_id(
            job_id=job_id, max_attempts=self.max_attempts, holder=self.keepalive.holder,
            stale_before=self.keepalive.stale_before(),
        )  # fmt: skip
        if job is None:
            found = self.repo.get_job(job_id=job_id)
            alive = found is not None and found.status == "running"
            log.info(
                "job %s: not run here (%s)", job_id, "alive in another worker" if alive else "ended or gone"
            )
            return
        log.info("job %s started in pid %d (attempt %d)", job.id, os.getpid(), job.attempts)
        with self.keepalive.holding(job.id):
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
    jobs = WorkerJobs(settings, batching, lambda job_id: publish_job(app, job_id))

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
