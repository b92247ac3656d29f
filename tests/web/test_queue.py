"""The distributed queue end to end on loopback: a real Redis server, `museforge serve` and `museforge worker`
child processes on the tiny test models. Jobs finish on both workers; a worker killed with ``kill -9``
mid-job hands its job to another and the listener gets one set of songs; a job that keeps killing workers is
failed with a reason; Redis killed and restarted keeps every accepted job; a web process whose broker is down
answers 503 at once."""

import pytest

from museforge.store import open_repository
from museforge.store.repository import lost_worker_reason
from web.queue_cluster import Cluster, Listener, wait_for

pytestmark = pytest.mark.xdist_group("queue")  # child processes: one of these tests at a time
LONG = {"bars": 64, "num_samples": 4}  # a job that runs long enough on the tiny model to be killed mid-way


@pytest.fixture
def cluster(tmp_path, models_folder):
    made = []

    def make(**settings: str) -> Cluster:
        c = Cluster(tmp_path, models_folder, **settings)
        made.append(c)
        c.start_redis()
        return c

    yield make
    for c in made:
        c.close()


def songs_of(cluster: Cluster, job_id: str) -> list:
    repo = open_repository(cluster.root / "var")
    try:
        return [s for s in repo.list_songs(owner=repo.get_job(job_id=job_id).owner) if s.job_id == job_id]
    finally:
        repo.close()


def test_jobs_run_on_two_workers_and_survive_a_redis_restart(cluster):
    c = cluster()
    base = c.start_web()
    workers = [c.start_worker("a"), c.start_worker("b")]
    listener = Listener(base)
    ids = [listener.submit(bars=4, seed=i).json()["id"] for i in range(6)]
    for job_id in ids:
        assert listener.finished(job_id)["status"] == "done"
    assert all(w.started() for w in workers), "each worker ran at least one job"
    assert set.union(*(w.started() for w in workers)) == set(ids)

    for w in workers:  # jobs accepted while no worker runs stay in Redis, which then dies
        w.stop()
    waiting = [listener.submit(bars=2, seed=10 + i) for i in range(3)]
    assert [r.status_code for r in waiting] == [202] * 3
    c.kill_redis()
    down = listener.submit(bars=2, seed=20)  # the broker is down: a clear 503, not a hang
    assert down.status_code == 503 and "queue is unreachable" in down.json()["detail"]
    refused = listener.client.get("/api/v1/jobs").json()["jobs"][0]
    assert refused["status"] == "failed" and "never run" in refused["error"]
    c.start_redis()
    c.start_worker("c")
    for r in waiting:
        assert listener.finished(r.json()["id"])["status"] == "done"


def test_a_worker_killed_mid_job_hands_it_to_another_and_one_set_of_songs_is_kept(cluster):
    c = cluster(queue_visibility_s="3")
    listener = Listener(c.start_web())
    workers = [c.start_worker("a"), c.start_worker("b")]
    job_id = listener.submit(seed=7, **LONG).json()["id"]
    holder = wait_for(lambda: next((w for w in workers if job_id in w.started()), None), "job started")
    holder.kill()
    done = listener.finished(job_id)
    assert done["status"] == "done", done
    other = next(w for w in workers if w is not holder)
    assert job_id in other.started()
    assert len(done["song_urls"]) == LONG["num_samples"]
    assert len(songs_of(c, job_id)) == LONG["num_samples"]  # the killed run stored none


def test_a_job_that_keeps_killing_its_workers_is_failed_with_the_reason(cluster):
    c = cluster(queue_visibility_s="3", max_attempts="2")
    listener = Listener(c.start_web())
    job_id = listener.submit(seed=8, **LONG).json()["id"]
    for name in ("a", "b"):  # each run of the job takes its worker down
        worker = c.start_worker(name)
        wait_for(lambda w=worker: job_id in w.started(), f"job started on {name}")
        worker.kill()
    c.start_worker("c")  # the third delivery finds no attempt left
    failed = listener.finished(job_id)
    assert failed["status"] == "failed" and failed["error"] == lost_worker_reason(2)
    assert songs_of(c, job_id) == []
