"""Accounts, privacy and refusals: isolation between users, CSRF, cookies, bad inputs → 4xx with a clear
message and nothing stored, the rate limit, and paths that try to leave var/."""

import os
import stat

import pytest
from fastapi.testclient import TestClient

from conftest import FIXTURES, corpus_path
from museforge.web import create_app
from museforge.web.security import COOKIE_NAME
from web.conftest import api_token, finished_job, make_settings


def signup(client, name):
    r = client.post(
        "/api/v1/auth/signup", json={"username": name, "password": "correct horse"}, headers=api_token(client)
    )
    assert r.status_code == 201, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


def test_user_b_cannot_reach_a_song_upload_or_job(client):
    ha = signup(client, "alice")
    job = finished_job(client, ha, {"bars": 1, "seed": 1})
    song_id = job["song_ids"][0]
    with open(FIXTURES / "single_track.mid", "rb") as fh:
        upload_id = client.post("/api/v1/uploads", files={"file": ("a.mid", fh)}, headers=ha).json()["id"]

    bob = TestClient(client.app, base_url="http://127.0.0.1")
    hb = signup(bob, "bob")
    for url in (
        f"/api/v1/songs/{song_id}", f"/api/v1/songs/{song_id}/midi", f"/api/v1/songs/{song_id}/audio.ogg",
        f"/api/v1/songs/{song_id}/audio.wav", f"/api/v1/songs/{song_id}/pianoroll.svg", f"/api/v1/jobs/{job['id']}",
        f"/api/v1/uploads/{upload_id}", f"/songs/{song_id}", f"/jobs/{job['id']}", f"/uploads/{upload_id}",
    ):  # fmt: skip
        r = bob.get(url)
        assert r.status_code == 404, url
    assert bob.post(f"/api/v1/songs/{song_id}/rating", json={"value": 1}, headers=hb).status_code == 404
    assert bob.post(f"/api/v1/songs/{song_id}/share", headers=hb).status_code == 404
    r = bob.post("/api/v1/jobs", json={"operation": "continue", "source_upload": upload_id}, headers=hb)
    assert r.status_code == 404 and r.json()["detail"] == "no such upload"
    r = bob.post("/api/v1/jobs", json={"operation": "continue", "source_song": song_id}, headers=hb)
    assert r.status_code == 404
    assert (
        bob.get("/api/v1/songs").json()["songs"] == [] and bob.get("/api/v1/uploads").json()["uploads"] == []
    )
    assert [s["id"] for s in client.get("/api/v1/songs").json()["songs"]] == [song_id]


def test_accounts_anonymous_songs_follow_the_visitor(client):
    h = api_token(client)
    song_id = finished_job(client, h, {"bars": 1, "seed": 2})["song_ids"][0]
    r = client.post("/api/v1/auth/signup", json={"username": "cleo", "password": "short"}, headers=h)
    assert r.status_code == 422 and "at least 8 characters" in r.json()["detail"]
    r = client.post("/api/v1/auth/signup", json={"username": "../x", "password": "long enough"}, headers=h)
    assert r.status_code == 422 and "user name" in r.json()["detail"]
    old_cookie = client.cookies[COOKIE_NAME]
    h = signup(client, "cleo")
    assert client.cookies[COOKIE_NAME] != old_cookie  # a new session on sign-in
    assert client.get("/api/v1/auth/session").json()["user"]["username"] == "cleo"
    assert [s["id"] for s in client.get("/api/v1/songs").json()["songs"]] == [song_id]
    h = {"X-CSRF-Token": client.post("/api/v1/auth/logout", headers=h).json()["csrf_token"]}
    assert client.get("/api/v1/songs").json()["songs"] == []
    r = client.post("/api/v1/auth/login", json={"username": "cleo", "password": "wrong password"}, headers=h)
    assert r.status_code == 401 and r.json()["detail"] == "wrong user name or password"
    other = TestClient(client.app, base_url="http://127.0.0.1")
    r = other.post(
        "/api/v1/auth/signup", json={"username": "CLEO", "password": "another one"}, headers=api_token(other)
    )
    assert r.status_code == 409 and "taken" in r.json()["detail"]
    r = client.post("/api/v1/auth/login", json={"username": "cleo", "password": "correct horse"}, headers=h)
    assert r.status_code == 200 and [s["id"] for s in client.get("/api/v1/songs").json()["songs"]] == [
        song_id
    ]
    stored = client.app.state.services.repo.find_user(username="cleo").password_hash
    assert stored.startswith("$argon2") and "correct horse" not in stored


def test_cookie_is_signed_httponly_and_the_secret_is_stored(client, settings):
    r = client.get("/")
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    secret = settings.var_dir / "secret_key"
    assert stat.S_IMODE(os.stat(secret).st_mode) == 0o600 and len(secret.read_text().strip()) >= 32
    value = client.cookies[COOKIE_NAME]
    real = TestClient(client.app, base_url="http://127.0.0.1", cookies={COOKIE_NAME: value})
    assert "set-cookie" not in real.get("/api/v1/auth/session").headers  # the session is recognised
    forged = value[:-2] + ("AA" if not value.endswith("AA") else "BB")
    fake = TestClient(client.app, base_url="http://127.0.0.1", cookies={COOKIE_NAME: forged})
    assert "set-cookie" in fake.get("/api/v1/auth/session").headers  # ignored: a new anonymous session


def test_csrf_is_required_for_api_writes_and_forms(client):
    r = client.post("/api/v1/jobs", json={"bars": 1})
    assert r.status_code == 403 and "X-CSRF-Token" in r.json()["detail"]
    r = client.post("/api/v1/jobs", json={"bars": 1}, headers={"X-CSRF-Token": "guess"})
    assert r.status_code == 403
    r = client.post("/generate", data={"model": "remi-transformer", "remi-transformer.bars": "1"})
    assert r.status_code == 403 and "reload the page" in r.text
    assert client.get("/api/v1/jobs").json()["jobs"] == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"model": "no-such-model"},
            "unknown model 'no-such-model'; models: musemorphose, performance-rnn, remi-transformer",
        ),
        ({"bars": 0}, "bars: Input should be greater than or equal to 1"),
        ({"bars": 500}, "bars may be at most 64 here, got 500"),
        ({"style": "techno"}, "unknown style 'techno'"),
        ({"seconds": 10}, "does not take seconds"),
        ({"model": "performance-rnn", "bars": 4}, "does not take bars"),
        ({"model": "performance-rnn", "pitch_classes": ["H"]}, "unknown pitch class 'H'"),
        ({"model": "performance-rnn", "density": 9}, "density: Input should be less than or equal to 7"),
        ({"rhythm": [9]}, "rhythm.0: Input should be less than or equal to 7"),
        ({"bars": 2, "polyphony": [1, 2, 3]}, "polyphony has 3 entries but only 2 bars"),
        ({"temperature": 0}, "temperature: Input should be greater than 0"),
        ({"bars": "many"}, "bars: Input should be a valid integer"),
        ({"colour": "blue"}, "colour: Extra inputs are not permitted"),
        ({"operation": "dance"}, "cannot 'dance'; it can: generate, continue"),
        ({"operation": "continue"}, "continue needs a source piece"),
        ({"source_song": "abc"}, "generate starts from nothing"),
        ({"num_samples": 9}, "num_samples may be at most 4"),
    ],
)
def test_bad_requests_are_refused_with_a_reason_and_store_nothing(client, body, message):
    r = client.post("/api/v1/jobs", json=body, headers=api_token(client))
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert client.get("/api/v1/jobs").json()["jobs"] == []


def _upload(client, name, data):
    return client.post("/api/v1/uploads", files={"file": (name, data)}, headers=api_token(client))


@pytest.mark.parametrize(
    ("name", "data", "status", "message"),
    [
        ("big.mid", b"MThd" + b"\0" * (600 * 1024), 413, "larger than"),
        ("corrupt.mid", (FIXTURES / "corrupt.mid").read_bytes(), 422, "corrupt MIDI"),
        ("empty.mid", (FIXTURES / "empty.mid").read_bytes(), 422, "no notes"),
        ("zero.mid", (FIXTURES / "zero_tpq.mid").read_bytes(), 422, "zero ticks per quarter"),
        ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 100, 415, "not a music file"),
        ("notes.txt", b"just some words", 415, "not a music file"),
        ("tune.mid", b"X:1\nT:t\nK:C\nCDEF|\n", 415, "named as midi but its content is abc"),
        ("broken.xml", b"<?xml version='1.0'?><score-partwise><part-list>", 422, "cannot read this file"),
        ("nothing.mid", b"", 422, "empty"),
    ],
)
def test_bad_uploads_are_refused_and_leave_nothing(client, settings, name, data, status, message):
    r = _upload(client, name, data)
    assert r.status_code == status and message in r.json()["detail"], r.text
    assert client.get("/api/v1/uploads").json()["uploads"] == []
    receive = settings.var_dir / "receive"
    assert [p for p in receive.rglob("*") if p.is_file()] == []


def test_uploads_of_every_format_are_sniffed_and_parsed(client, settings):
    abc = b"X:1\nT:Little tune\nM:4/4\nL:1/8\nK:G\nGABc dedB|dedB dedB|c2ec B2dB|A4 A4|\n"
    cases = [
        ("../../outside.mid", (FIXTURES / "multitrack_drums.mid").read_bytes(), "midi"),
        ("tune.abc", abc, "abc"),
        ("chorale.mxl", corpus_path("bach/bwv66.6").read_bytes(), "mxl"),
        ("no-extension", (FIXTURES / "odd_meter.mid").read_bytes(), "midi"),
    ]
    for name, data, kind in cases:
        r = _upload(client, name, data)
        assert r.status_code == 201, r.text
        up = r.json()
        assert up["kind"] == kind and up["meta"]["notes"] > 0
        assert up["path"].startswith("receive/") and ".." not in up["path"] and "/" not in up["filename"]
    files = sorted(p.name for p in (settings.var_dir / "receive").iterdir() if p.is_file())
    assert len(files) == 4 and not (settings.var_dir.parent / "outside.mid").exists()


def test_paths_cannot_leave_var(client):
    for url in (
        "/api/v1/songs/..%2F..%2Fsecret_key/midi",
        "/api/v1/songs/../../secret_key",
        "/static/../secret_key",
    ):
        r = client.get(url)
        assert r.status_code == 404 and "secret" not in r.text.lower().replace("secret_key", "")


def test_rate_limit_per_owner(tmp_path, models_folder):
    settings = make_settings(tmp_path / "var", models_folder, rate_limit_jobs=2, rate_limit_window_s=3600)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        h = api_token(client)
        for _ in range(2):
            assert client.post("/api/v1/jobs", json={"bars": 1}, headers=h).status_code == 202
        r = client.post("/api/v1/jobs", json={"bars": 1}, headers=h)
        assert r.status_code == 429 and "at most 2 every 3600 s" in r.json()["detail"]
        assert r.headers["retry-after"] == "3600"
        assert len(client.get("/api/v1/jobs").json()["jobs"]) == 2
        other = TestClient(client.app, base_url="http://127.0.0.1")  # another visitor has their own budget
        assert other.post("/api/v1/jobs", json={"bars": 1}, headers=api_token(other)).status_code == 202


def test_oversized_form_body_is_refused_before_reading(client):
    r = client.post(
        "/api/v1/jobs",
        content=b"x" * (300 * 1024),
        headers={**api_token(client), "content-type": "application/json"},
    )
    assert r.status_code == 413 and "limit" in r.json()["detail"]
