"""Jobs on a distributed queue: Celery with a Redis broker, when ``MUSEFORGE_QUEUE_URL`` names one.

The store stays the single source of truth: a message carries only a job id, so any web process answers for
any job, and a worker (`museforge.web.worker`, started by `museforge worker`) claims the job in the store
before it runs it. Messages are acknowledged late, after the job ended, and a worker takes one message per
free slot at a time (prefetch 1). A worker says in the store every few seconds that its jobs are alive; when a
worker is killed mid-job its jobs fall silent, and another worker puts them back on the queue (`Keepalive` in
`museforge.web.worker`); Redis handing the unacknowledged message on after its visibility timeout is only the
backstop. Generation and the lab have queues of their own, so a
fine-tune never holds up a listener's song.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import redis
from celery import Celery
from celery.schedules import BaseSchedule
from kombu.exceptions import OperationalError

from museforge.lab.schedule import Schedule, parse_schedule
from museforge.web.jobs import JobWatch
from museforge.web.settings import Settings

log = logging.getLogger(__name__)
GENERATE_QUEUE = "generate"
LAB_QUEUE = "lab"
QUEUES = (GENERATE_QUEUE, LAB_QUEUE)
GENERATE_TASK = "museforge.generate"
LAB_CYCLE_TASK = "museforge.lab_cycle"
CONNECT_TIMEOUT_S = 3.0  # a broker that does not answer in this long is unreachable: the request gets a 503
# A publish tries the broker this many more times before the request gets a 503: a web process's pooled
# connection to a Redis that restarted is stale, and the first retry reconnects.
PUBLISH_RETRIES = 2
# Workers publish the id of each job they change on this channel; web processes listen to it.
CHANGES_CHANNEL = "museforge:job-changes"


class BrokerUnavailable(RuntimeError):
    """The queue's broker cannot be reached: the job cannot be queued now."""


class LabSchedule(BaseSchedule):
    """``MUSEFORGE_LAB_SCHEDULE`` as a Celery beat schedule, so the one beat process of a deployment runs the
    lab however many web processes there are."""

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule

    def is_due(self, last_run_at: datetime) -> tuple[bool, float]:  # type: ignore[override]
        """(due now, seconds until beat should ask again)."""
        now = time.time()
        due = self.schedule.next_run(last_run_at.timestamp())
        if now >= due:
            return True, self.schedule.next_run(now) - now
        return False, due - now

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        return timedelta(seconds=max(0.0, self.schedule.next_run(last_run_at.timestamp()) - time.time()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabSchedule) and other.schedule == self.schedule

    def __hash__(self) -> int:
        return hash(self.schedule)

    def __reduce__(self) -> tuple[type, tuple[Schedule]]:
        """Beat keeps its entries in a shelve file: pickle the schedule, not the Celery app it points to."""
        return LabSchedule, (self.schedule,)


def celery_app(settings: Settings) -> Celery:
    """The Celery app both sides use: broker, queues, late acknowledgement and the lab's beat schedule."""
    assert settings.queue_url is not None
    app = Celery("museforge", broker=settings.queue_url, set_as_current=False)
    beat: dict[str, dict[str, Any]] = {}
    if settings.lab_schedule:
        beat["lab-cycle"] = {
            "task": LAB_CYCLE_TASK,
            "schedule": LabSchedule(parse_schedule(settings.lab_schedule)),
            "options": {"queue": LAB_QUEUE},
        }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,  # a job's state and result live in the store
        task_default_queue=GENERATE_QUEUE,
        task_routes={GENERATE_TASK: {"queue": GENERATE_QUEUE}, LAB_CYCLE_TASK: {"queue": LAB_QUEUE}},
        broker_transport_options={
            "visibility_timeout": settings.queue_visibility_s,
            "socket_connect_timeout": CONNECT_TIMEOUT_S,
        },
        broker_connection_timeout=CONNECT_TIMEOUT_S,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits out a Redis restart
        worker_cancel_long_running_tasks_on_connection_loss=False,
        beat_schedule=beat,
        timezone="UTC",
    )
    return app


def publish_job(app: Celery, job_id: str) -> None:
    """Put job ``job_id`` on the generation queue (`BrokerUnavailable` when the broker cannot take it)."""
    try:
        app.send_task(
            GENERATE_TASK, args=[job_id], queue=GENERATE_QUEUE, retry=True,
            retry_policy={"max_retries": PUBLISH_RETRIES, "interval_start": 0.2, "interval_step": 0.5,
                          "interval_max": 1.0},
        )  # fmt: skip
    except OperationalError as exc:
        raise BrokerUnavailable(f"the job queue's broker cannot be reached: {exc}") from exc


class PublishedWatch(JobWatch):
    """A worker's change counters: each change is also published on Redis, so the web process a listener waits
    on hears of it at once. A lost message costs only time: waiting requests read the store every second."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=CONNECT_TIMEOUT_S)

    def bump(self, job_id: str) -> None:
        super().bump(job_id)
        try:
            self.redis.publish(CHANGES_CHANNEL, job_id)
        except redis.RedisError as exc:
            log.warning("job %s: change not published (%s)", job_id, exc)


class CeleryJobQueue:
    """The web side of the distributed queue: `notify` publishes the job's id to the generation queue, and a
    thread listens to the workers' `PublishedWatch` so `version` moves when a worker changes a job."""

    def __init__(self, settings: Settings) -> None:
        assert settings.queue_url is not None
        self.app = celery_app(settings)
        self.url = settings.queue_url
        self.watch = JobWatch()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="museforge-job-changes", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _listen(self) -> None:
        """Bump the watch for every change the workers publish; reconnect when Redis goes away."""
        while not self._stop.is_set():
            try:
                with redis.Redis.from_url(self.url, socket_connect_timeout=CONNECT_TIMEOUT_S).pubsub() as sub:
                    sub.subscribe(CHANGES_CHANNEL)
                    while not self._stop.is_set():
                        message = sub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None:
                            self.watch.bump(message["data"].decode())
            except redis.RedisError:
                self._stop.wait(1.0)

    def notify(self, job_id: str) -> None:
        publish_job(self.app, job_id)

    def version(self, job_id: str) -> int:
        return self.watch.version(job_id)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self.app.close()
