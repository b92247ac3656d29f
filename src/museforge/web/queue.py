"""Jobs on a distributed queue: Celery with a Redis broker, when ``MUSEFORGE_QUEUE_URL`` names one.

The store stays the single source of truth: a message carries only a job id, so any web process answers for
any job, and a worker (`museforge.web.worker`, started by `museforge worker`) claims the job in the store
before it runs it. Messages are acknowledged late, after the job ended, and a worker takes one message per
free slot at a time (prefetch 1): a worker killed mid-job leaves its message unacknowledged, and Redis hands it
to another worker once the visibility timeout passes. Generation and the lab have queues of their own, so a
fine-tune never holds up a listener's song.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

from celery import Celery
from celery.schedules import BaseSchedule
from kombu.exceptions import OperationalError

from museforge.lab.schedule import Schedule, parse_schedule
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


class CeleryJobQueue:
    """The web side of the distributed queue: `notify` publishes the job's id to the generation queue.

    Nothing runs in the web process, so `version` is always 0 and waiting requests read the store."""

    def __init__(self, settings: Settings) -> None:
        self.app = celery_app(settings)
        self.broker = settings.queue_url

    def start(self) -> None:
        """Nothing to start: the workers are other processes."""

    def notify(self, job_id: str) -> None:
        try:
            self.app.send_task(
                GENERATE_TASK, args=[job_id], queue=GENERATE_QUEUE, retry=True,
                retry_policy={"max_retries": PUBLISH_RETRIES, "interval_start": 0.2, "interval_step": 0.5,
                              "interval_max": 1.0},
            )  # fmt: skip
        except OperationalError as exc:
            raise BrokerUnavailable(f"the job queue's broker cannot be reached: {exc}") from exc

    def version(self, job_id: str) -> int:
        return 0

    def stop(self, timeout: float = 30.0) -> None:
        self.app.close()
