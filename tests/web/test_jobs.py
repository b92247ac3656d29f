"""Jobs survive restarts: a job a killed server left running is re-queued and finished (or failed with a reason
once its attempts are used up), and a server stopping mid-job puts the job back in the queue. Following a job
with ``?wait`` answers when it changes."""

import time

import pytest
from fastapi.testclient import TestClient

from museforge.store import open_repository
from museforge.store.repository import interrupted_reason
from museforge.web import create_app
from museforge.web.jobs import song_title
from web.conftest import api_token, make_settings


def test_restart_requeues_or_fails_jobs_left_running(tmp_path, models_folder):
    var = tmp_path / "var"
    repo = open_repository(var)  # what a killed server leaves: two jobs marked running
    kept = repo.create_job(owner="anon:x", model="remi-transformer", operation="generate",
                           params={"style": None, "bars": 1, "seed": 5, "temperature": 1.0, "top_k": None,
                                   "top_p": 0.95, "num_samples": 1, "primer_bars": None, "rhythm": None,
                                   "polyphony": None})  # fmt: skip
    spent = repo.create_job(
        owner="anon:x", model="remi-transformer", operation="generate", params=dict(kept.params)
    )
    repo.claim_job()  # kept: running, attempt 1, and the server "dies"
    repo.claim_job()
    repo.requeue_job(job_id=spent.id)
    repo.claim_job()  # spent: running on its 2nd attempt
    assert {repo.get_job(job_id=j).status for j in (kept.id, spent.id)} == {"running"}
    repo.close()

    with TestClient(create_app(make_settings(var, models_folder))) as client:
        repo = client.app.state.services.repo
        deadline = time.monotonic() + 60
        while repo.get_job(job_id=kept.id).status != "done" and time.monotonic() < deadline:
            time.sleep(0.05)
        done = repo.get_job(job_id=kept.id)
        assert done.status == "done" and done.attempts == 2 and len(done.song_ids) == 1
        assert repo.get_song(song_id=done.song_ids[0]).params["seed"] == 5
        failed = repo.get_job(job_id=spent.id)
        assert failed.status == "failed" and failed.error == interrupted_reason(2)


def test_stopping_server_puts_the_running_job_back(tmp_path, models_folder):
    var = tmp_path / "var"
    # an hour of music: far more than the tiny test model can play before the server stops
    settings = make_settings(var, models_folder, max_seconds=3600)
    with TestClient(create_app(settings)) as client:
        h = api_token(client)
        job_id = client.post(
            "/api/v1/jobs", json={"model": "performance-rnn", "seconds": 3600}, headers=h
        ).json()["id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/v1/jobs/{job_id}").json()["progress"] == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert client.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"
    repo = open_repository(var)
    job = repo.get_job(job_id=job_id)
    assert job.status == "queued" and job.progress == 0 and job.song_ids == []
    repo.close()
    assert [p for p in (var / "result").rglob("*") if p.is_file()] == []  # no half song left visible
    with TestClient(create_app(settings)) as client:
        job = client.app.state.services.repo.get_job(job_id=job_id)
        assert job.status in ("queued", "running")  # picked up again by the new server's workers
        client.app.state.services.repo.fail_job(job_id=job_id, error="test over")  # do not play the hour


def test_a_job_that_cannot_run_fails_with_its_reason(client):
    """A job queued for a model that is gone by the time it runs (a redeploy) fails visibly, never hangs."""
    services = client.app.state.services
    job = services.repo.create_job(owner="anon:x", model="retired-model", operation="generate", params={})
    services.queue.notify(job.id)
    deadline = time.monotonic() + 30
    while services.repo.get_job(job_id=job.id).status == "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    failed = services.repo.get_job(job_id=job.id)
    assert failed.status == "failed" and "unknown model 'retired-model'" in failed.error


def test_long_songs_encode_to_ogg():
    """~90 s of a chorale: one libsndfile write of that much Vorbis crashes the process; blocks do not."""
    import io

    import soundfile

    from conftest import corpus_path
    from museforge.data.formats import load_score
    from museforge.web.jobs import render_audio

    score = load_score(corpus_path("bach/bwv66.6"))
    for tempo in score.tempos:
        tempo.qpm = tempo.qpm / 4
    data = render_audio(score, ".ogg")
    audio, rate = soundfile.read(io.BytesIO(data))
    assert data.startswith(b"OggS") and len(audio) / rate > 60


def test_waiting_on_a_job_answers_each_time_it_changes(client):
    """With ``?wait`` every answer while the job runs is news (another status or progress than the answer
    before), and the last one is its end: a client follows a job without polling."""
    h = api_token(client)
    job = client.post("/api/v1/jobs", json={"style": "folk", "bars": 4, "seed": 1}, headers=h).json()
    answers = [job]
    while answers[-1]["status"] not in ("done", "failed"):
        answers.append(client.get(f"{job['url']}?wait=30").json())
    states = [(a["status"], a["progress"]) for a in answers]
    assert states[-1] == ("done", 1.0) and len(set(states)) == len(states), states
    assert client.get(f"{job['url']}?wait=30").json()["status"] == "done"  # an ended job answers at once


def test_waiting_on_a_job_that_does_not_change_answers_when_the_wait_is_over(tmp_path, models_folder):
    settings = make_settings(tmp_path / "var", models_folder, max_seconds=3600)  # one worker
    with TestClient(create_app(settings)) as client:
        h = api_token(client)
        client.post("/api/v1/jobs", json={"model": "performance-rnn", "seconds": 3600}, headers=h)
        queued = client.post("/api/v1/jobs", json={"style": "folk", "bars": 1}, headers=h).json()
        answer = client.get(f"{queued['url']}?wait=0.5").json()
        assert (answer["status"], answer["progress"]) == ("queued", 0.0)


@pytest.mark.parametrize("wait", ["-1", "31", "soon"])
def test_a_bad_wait_is_refused(client, wait):
    h = api_token(client)
    job = client.post("/api/v1/jobs", json={"style": "folk", "bars": 1}, headers=h).json()
    r = client.get(f"{job['url']}?wait={wait}")
    assert r.status_code == 422 and "wait" in r.text


def test_song_titles_count_bars_and_seconds():
    assert song_title({"style": "folk", "bars": 1, "seed": 3}, "transformer") == "Folk, 1 bar, seed 3"
    assert song_title({"style": "folk", "bars": 16, "seed": 3}, "transformer") == "Folk, 16 bars, seed 3"
    assert song_title({"seconds": 20.0, "seed": 1}, "performance_rnn") == "Piano, 20 s, seed 1"
