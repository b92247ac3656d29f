"""The buffered event sink on a real SQLite store: nothing is written during `record`, batches reach the store
from the background thread, a full buffer drops the oldest events, and old raw events are rolled up daily."""

import time

from museforge.analytics.sink import EventSink
from museforge.store import open_repository
from museforge.store.records import Event, day_of


def plays(n, day=None):
    at = time.time() if day is None else (day + 0.5) * 86400
    return [Event("play", f"user:{i % 3}", at=at, model="m", style="folk") for i in range(n)]


def total(repo):
    rows = repo.count_events(by=())
    return rows[0]["n"] if rows else 0


def test_record_only_buffers_and_flush_writes_one_batch(tmp_path):
    repo = open_repository(tmp_path)
    sink = EventSink(repo)
    for e in plays(5):
        sink.record(e)
    assert total(repo) == 0
    assert sink.flush() == 5 and total(repo) == 5 and sink.flush() == 0
    repo.close()


def test_the_thread_writes_and_close_flushes_the_rest(tmp_path):
    repo = open_repository(tmp_path)
    sink = EventSink(repo, interval_s=0.05)
    sink.start()
    sink.record(plays(1)[0])
    deadline = time.monotonic() + 30
    while total(repo) == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert total(repo) == 1
    sink._stop.set()  # stop the loop first, so only close() can write the next event
    sink._thread.join()
    sink.record(plays(1)[0])
    sink.close()
    assert total(repo) == 2
    repo.close()


def test_a_full_buffer_drops_the_oldest(tmp_path):
    repo = open_repository(tmp_path)
    sink = EventSink(repo, max_buffer=4)
    events = plays(6)
    for e in events:
        sink.record(e)
    assert sink.dropped == 2 and sink.flush() == 4
    repo.close()


def test_old_raw_events_are_rolled_up_once_a_day_without_changing_figures(tmp_path):
    repo = open_repository(tmp_path)
    today = day_of(time.time())
    repo.record_events(events=plays(3, day=today - 10) + plays(2, day=today))
    before = repo.count_events(by=("day", "listener"))
    sink = EventSink(repo, keep_days=5)
    assert sink.rollup_if_due() == 3 and sink.rollup_if_due() == 0  # once per day
    assert repo.count_events(by=("day", "listener")) == before
    assert EventSink(repo).rollup_if_due() == 0  # keep_days=0: raw events are kept
    repo.close()
