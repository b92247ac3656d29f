"""The distributed queue end to end on loopback: a real Redis server, `museforge serve` and `museforge worker`
child processes on the tiny test models. Jobs finish on both workers; a worker killed with ``kill -9``
mid-job hands its job to another within seconds (its heartbeat stops; the broker's visibility timeout is made
too long to help) and the listener gets one set of songs; a job delivered twice while its worker lives runs
once; a job that keeps killing workers is failed with a reason; Redis killed and restarted keeps every
accepted job; a web process whose broker is down answers 503 at once; the lab's schedule runs through Celery
beat on the lab queue."""

import pickle
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from museforge.data.build import BuildOptions, build_dataset, limit_per_collection
from museforge.data.corpora import music21_units
from museforge.lab.heldout import HELDOUT, copy_pieces, pick_heldout
from museforge.lab.schedule import parse_schedule
from museforge.store import open_repository
from museforge.store.repository import lost_worker_reason
from museforge.web.queue import LabSchedule, celery_app, publish_job
from museforge.web.settings import Settings
from web.queue_cluster import Cluster, Listener, wait_for

pytestmark = pytest.mark.xdist_group("queue")  # child processes: one of these tests at a time
LONG = {"bars": 64, "num_samples": 4}  # a job that runs long enough on the tiny model to be killed mid-way
HEARTBEAT = {"queue_heartbeat_s": "0.5", "queue_visibility_s": "3600"}  # only heartbeats can hand a job on


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
    workers = [c.start_worker("a", "--batching"), c.start_worker("b")]  # one decodes through its batcher
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


def long_job_on_one_of_two_workers(c: Cluster, seed: int):
    """(listener, job id, the worker running the job, the idle one): a long job submitted to two workers."""
    listener = Listener(c.start_web())
    workers = [c.start_worker("a"), c.start_worker("b")]
    job_id = listener.submit(seed=seed, **LONG).json()["id"]
    holder = wait_for(lambda: next((w for w in workers if job_id in w.started()), None), "job started")
    (other,) = [w for w in workers if w is not holder]
    return listener, job_id, holder, other


def test_a_worker_killed_mid_job_hands_it_to_another_and_one_set_of_songs_is_kept(cluster):
    c = cluster(**HEARTBEAT)
    listener, job_id, holder, other = long_job_on_one_of_two_workers(c, seed=7)
    holder.kill()
    done = listener.finished(job_id)
    assert done["status"] == "done", done
    assert job_id in other.started() and "lost its worker: queued again" in other.log.read_text()
    assert len(done["song_urls"]) == LONG["num_samples"]
    assert len(songs_of(c, job_id)) == LONG["num_samples"]  # the killed run stored none


def test_a_job_delivered_again_while_its_worker_lives_runs_once(cluster):
    c = cluster(**HEARTBEAT)
    listener, job_id, _, idle = long_job_on_one_of_two_workers(c, seed=9)
    app = celery_app(Settings(queue_url=c.url))
    publish_job(app, job_id)  # what Redis does when a message outlives its visibility timeout
    app.close()
    wait_for(lambda: f"job {job_id}: not run here" in idle.log.read_text(), "the second delivery taken")
    assert f"job {job_id}: not run here (alive in another worker)" in idle.log.read_text()
    assert listener.finished(job_id)["status"] == "done"
    assert job_id not in idle.started()
    assert len(songs_of(c, job_id)) == LONG["num_samples"]


def test_a_job_that_keeps_killing_its_workers_is_failed_with_the_reason(cluster):
    c = cluster(max_attempts="2", **HEARTBEAT)
    listener = Listener(c.start_web())
    job_id = listener.submit(seed=8, **LONG).json()["id"]
    worker = c.start_worker("a")
    for name in ("b", "c"):  # each run of the job takes its worker down; the third finds no attempt left
        wait_for(lambda w=worker: job_id in w.started(), "job started")
        worker.kill()
        worker = c.start_worker(name)
    failed = listener.finished(job_id)
    assert failed["status"] == "failed" and failed["error"] == lost_worker_reason(2)
    assert "no attempts left: failed" in worker.log.read_text()
    assert songs_of(c, job_id) == []


def test_the_lab_schedule_runs_through_beat_on_the_lab_queue(cluster, tmp_path, models_folder):
    corpus = tmp_path / "corpus"
    units = limit_per_collection(music21_units(["bach", "essenFolksong"]), 6)
    build_dataset(units, corpus, BuildOptions(workers=1, progress=False, valid=0.3, test=0.3))
    models = tmp_path / "models"  # the tiny model, shipping a held-out set as a gated model must
    shutil.copytree(models_folder / "remi-transformer", models / "remi-transformer")
    copy_pieces([(r, corpus) for r in pick_heldout(corpus, 2)], models / "remi-transformer" / HELDOUT, "test")
    c = cluster(lab_schedule="every 2s", lab_corpus=str(corpus), lab_max_steps="2")
    c.env["MUSEFORGE_MODELS_DIR"] = str(models)
    c.start_worker("lab", "--queues", "lab", "--beat")
    cycles = c.root / "var" / "resource" / "lab" / "remi-transformer" / "cycles.jsonl"
    wait_for(cycles.is_file, "a scheduled lab cycle's result", timeout=300)
    assert "lab update --model remi-transformer" in (c.root / "var/resource/lab/schedule.log").read_text()


def test_the_lab_schedule_tells_beat_when_it_is_due():
    every = LabSchedule(parse_schedule("every 10m"))
    now = datetime.now(UTC)
    due, wait = every.is_due(now - timedelta(minutes=11))
    assert due and 500 < wait <= 600  # and again in ten minutes
    due, wait = every.is_due(now - timedelta(minutes=4))
    assert not due and 260 < wait <= 360
    assert every.remaining_estimate(now) > timedelta(minutes=9)
    assert pickle.loads(pickle.dumps(every)) == every  # beat keeps its entries in a shelve file
    assert every != LabSchedule(parse_schedule("03:30"))
