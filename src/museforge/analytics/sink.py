"""A buffered event sink: requests append to memory and a background thread writes batches to the store.

Recording an event never waits on the database; a full buffer drops the oldest events (and counts them) rather
than grow without bound. Old raw events are rolled up once a day when ``keep_days`` is set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from museforge.store import Repository
from museforge.store.records import Event, day_of

log = logging.getLogger(__name__)


class EventSink:
    """Collects events and flushes them every ``interval_s`` (and on `close`)."""

    def __init__(
        self, repo: Repository, *, interval_s: float = 1.0, max_buffer: int = 100_000, keep_days: int = 0
    ) -> None:
        self.repo = repo
        self.interval_s = interval_s
        self.keep_days = keep_days
        self.dropped = 0
        self._buffer: deque[Event] = deque(maxlen=max_buffer)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rolled_day: int | None = None

    def record(self, event: Event) -> None:
        """Queue one event (a deque append: no I/O)."""
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                self.dropped += 1
            self._buffer.append(event)

    def flush(self) -> int:
        """Write what is buffered in one batch; returns how many events were written."""
        with self._lock:
            batch = list(self._buffer)
            self._buffer.clear()
        if batch:
            try:
                self.repo.record_events(events=batch)
            except Exception:  # the store is down: keep the events for the next try
                log.exception("could not write %d analytics events; will retry", len(batch))
                with self._lock:
                    self._buffer.extendleft(reversed(batch))
                return 0
        return len(batch)

    def rollup_if_due(self) -> int:
        """Once a day, fold raw events older than ``keep_days`` into the rollup counts."""
        today = day_of(time.time())
        if not self.keep_days or self._rolled_day == today:
            return 0
        self._rolled_day = today
        return self.repo.rollup_events(before_day=today - self.keep_days)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="museforge-events", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.flush()
            try:
                self.rollup_if_due()
            except Exception:
                log.exception("rolling up old analytics events failed")

    def close(self) -> None:
        """Stop the thread and write what is left."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()
