"""The JSON API end to end on the real SQLite store: generate → job → song → MIDI/audio/piano roll → rate →
share → history, both model families, continuation from an upload, and the OpenAPI document."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import symusic

from conftest import FIXTURES
from web.conftest import api_token, wait_job


def generate(client, headers, **body):
    r = client.post("/api/v1/jobs", json=body, headers=headers)
    assert r.status_code == 202, r.text
    job = wait_job(client, r.json()["id"])
    assert job["status"] == "done", job
    return job


def test_generate_job_song_files_rating_history(client):
    h = api_token(client)
    models = client.get("/api/v1/models").json()
    assert models["default"] == "remi-transformer"
    remi = next(m for m in models["models"] if m["name"] == "remi-transformer")
    assert {"style", "bars", "attributes"} <= {c["name"] for c in remi["controls"]}
    assert [o["name"] for o in remi["operations"]] == ["generate", "continue", "infill"]
    precisions = {m["name"]: m["precision"] for m in models["models"]}
    # "auto" follows this machine's probe (float16 where it agrees and is faster), recorded in var/
    assert {precisions["remi-transformer"], precisions["musemorphose"]} <= {"fp16 up to batch 4", "fp32"}
    probed = json.loads((client.app.state.settings.var_dir / "precision.json").read_text(encoding="utf-8"))
    assert {Path(key.split(" | ")[2]).parent.name for key in probed} >= {"remi-transformer", "musemorphose"}
    assert precisions["performance-rnn"] == "fp32"

    job = generate(
        client, h, style="chorale", bars=2, seed=7, temperature=0.9, rhythm=[3, None], polyphony=[2]
    )
    assert job["progress"] == 1.0 and job["attempts"] == 1 and len(job["song_ids"]) == 1
    song = client.get(job["song_urls"][0]).json()
    assert (
        song["params"]["seed"] == 7 and song["params"]["bars"] == 2 and song["params"]["style"] == "chorale"
    )
    assert song["params"]["attributes"] == [[3, 2], None]
    assert song["params"]["precision"] == precisions["remi-transformer"][:4]
    assert song["meta"]["notes"] > 0 and song["originality"]["near_copy"] is False
    assert song["originality"]["index_source"].endswith("originality.npz")

    midi = client.get(song["urls"]["midi"])
    assert midi.status_code == 200 and midi.headers["content-type"] == "audio/midi"
    assert symusic.Score.from_midi(midi.content).note_num() == song["meta"]["notes"]
    for fmt in ("ogg", "wav"):
        audio = client.get(song["urls"][fmt])
        assert audio.status_code == 200 and audio.headers["content-type"] == f"audio/{fmt}"
        samples, rate = soundfile.read(io.BytesIO(audio.content))
        assert rate == 44100 and len(samples) > rate and np.abs(samples).max() > 0.05
    assert "wav" in client.app.state.services.repo.get_song(song_id=song["id"]).files  # rendered once, kept
    svg = client.get(song["urls"]["pianoroll"])
    assert svg.headers["content-type"].startswith("image/svg+xml") and svg.text.count('class="note"') > 0

    assert client.post(f"/api/v1/songs/{song['id']}/rating", json={"value": 4}, headers=h).json() == {
        "mean": 4.0, "count": 1, "mine": 4,
    }  # fmt: skip
    history = client.get("/api/v1/songs").json()["songs"]
    assert [s["id"] for s in history] == [song["id"]] and history[0]["rating"]["mine"] == 4
    assert [j["id"] for j in client.get("/api/v1/jobs").json()["jobs"]] == [job["id"]]

    # the same seed and settings make the same song
    again = generate(
        client, h, style="chorale", bars=2, seed=7, temperature=0.9, rhythm=[3, None], polyphony=[2]
    )
    twin = client.get(again["song_urls"][0]).json()
    assert client.get(twin["urls"]["midi"]).content == midi.content


def test_share_link_lets_others_listen_until_revoked(client):
    h = api_token(client)
    song_id = generate(client, h, bars=1, seed=3)["song_ids"][0]
    share = client.post(f"/api/v1/songs/{song_id}/share", headers=h).json()
    token = share["share_token"]
    assert share["url"] == f"/s/{token}"
    other = type(client)(client.app, base_url="http://127.0.0.1")
    assert other.get(f"/api/v1/songs/{song_id}").status_code == 404
    seen = other.get(f"/api/v1/songs/{song_id}", params={"share": token}).json()
    assert seen["owned"] is False and seen["share_url"] is None
    assert other.get(seen["urls"]["midi"]).status_code == 200
    assert other.get(seen["urls"]["ogg"]).status_code == 200
    other_h = api_token(other)
    r = other.post(
        f"/api/v1/songs/{song_id}/rating", params={"share": token}, json={"value": 5}, headers=other_h
    )
    assert r.json()["count"] == 1
    assert other.post(f"/api/v1/songs/{song_id}/share", headers=other_h).status_code == 404  # only the owner
    assert client.delete(f"/api/v1/songs/{song_id}/share", headers=h).json() == {"shared": False}
    assert other.get(f"/api/v1/songs/{song_id}", params={"share": token}).status_code == 404


def test_performance_rnn_with_its_own_controls(client):
    h = api_token(client)
    job = generate(
        client, h, model="performance-rnn", seconds=3, density=3, pitch_classes=["E", "C", "G"], seed=1
    )
    song = client.get(job["song_urls"][0]).json()
    assert song["params"]["seconds"] == 3 and song["params"]["density"] == 3
    assert song["params"]["pitch_classes"] == ["C", "E", "G"]
    assert song["originality"] is None  # this model ships no index: nothing is claimed
    assert 1.0 < song["meta"]["duration_s"] < 9.0


def test_continue_an_upload_and_a_song(client):
    h = api_token(client)
    with open(FIXTURES / "single_track.mid", "rb") as fh:
        up = client.post("/api/v1/uploads", files={"file": ("my tune.mid", fh, "audio/midi")}, headers=h)
    assert up.status_code == 201, up.text
    upload = up.json()
    assert upload["kind"] == "midi" and upload["meta"]["notes"] > 0 and upload["filename"] == "my tune.mid"
    assert client.get("/api/v1/uploads").json()["uploads"][0]["id"] == upload["id"]
    job = generate(client, h, operation="continue", source_upload=upload["id"], primer_bars=2, bars=2, seed=2)
    song = client.get(job["song_urls"][0]).json()
    assert song["params"]["primer_bars_used"] == 2 and song["params"]["source_upload"] == upload["id"]
    more = generate(
        client, h, model="performance-rnn", operation="continue", source_song=song["id"], seconds=2
    )
    longer = client.get(more["song_urls"][0]).json()
    assert longer["meta"]["duration_s"] > 2.0 and longer["params"]["source_song"] == song["id"]


def test_key_tempo_and_instruments_reach_the_song(client):
    h = api_token(client)
    job = generate(client, h, bars=2, seed=4, key="g", tempo=84, instruments="Violin")
    song = client.get(job["song_urls"][0]).json()
    score = symusic.Score.from_midi(client.get(song["urls"]["midi"]).content)
    assert song["params"]["in_key"].startswith("G ") and song["params"]["key"] == "G"
    assert (
        song["params"]["tempo"] == 84 and song["title"] == f"Song, 2 bars, {song['params']['in_key']}, seed 4"
    )
    assert score.tempos[0].qpm == pytest.approx(84.0, rel=1e-4)
    assert {t.program for t in score.tracks if not t.is_drum} == {40}
    for body, message in [
        ({"key": "H major"}, "unknown key 'H major'"),
        ({"instruments": ["Violin", "Kazoo"]}, "unknown instrument 'Kazoo'"),
        ({"tempo": 5}, "tempo"),
    ]:
        r = client.post("/api/v1/jobs", json={"bars": 2, **body}, headers=h)
        assert r.status_code == 422 and message in r.text, r.text
    r = client.post(
        "/api/v1/jobs", content='{"bars": 2, "tempo": NaN}', headers={**h, "content-type": "application/json"}
    )
    assert r.status_code == 422


def test_openapi_lists_every_resource(client):
    spec = client.get("/api/v1/openapi.json").json()
    paths = set(spec["paths"])
    for path in (
        "/api/v1/models", "/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/songs", "/api/v1/songs/{song_id}",
        "/api/v1/songs/{song_id}/midi", "/api/v1/songs/{song_id}/audio.{fmt}", "/api/v1/songs/{song_id}/pianoroll.svg",
        "/api/v1/songs/{song_id}/rating", "/api/v1/songs/{song_id}/share", "/api/v1/uploads", "/api/v1/auth/login",
    ):  # fmt: skip
        assert path in paths, path
    assert not any(p.startswith("/songs") for p in paths)  # pages stay out of the API document
    assert client.get("/docs").status_code == 200
