"""Jobs survive restarts: a job a killed server left running is re-queued and finished (or failed with a reason
once its attempts are used up), and a server stopping mid-job puts the job back in the queue."""

import time

from fastapi.testclient import TestClient

from museforge.store import open_repository
from museforge.store.repository import interrupted_reason
from museforge.web import create_app
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
    services.queue.notify()
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
