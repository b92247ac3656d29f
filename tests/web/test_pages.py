"""Every page through its forms, as a browser without JavaScript uses them: generate → job → song (player,
piano roll, originality, downloads, rating, share, continue) → history; upload; sign up / log in / log out."""

import re

from fastapi.testclient import TestClient

from conftest import FIXTURES
from web.conftest import csrf, wait_job


def test_generate_form_to_song_page_and_history(client):
    home = client.get("/")
    assert home.status_code == 200
    html = home.text
    assert (
        'id="model-select"' in html
        and 'data-model="remi-transformer"' in html
        and 'data-model="performance-rnn"' in html
    )
    assert 'name="remi-transformer.style"' in html and 'name="performance-rnn.pitch_classes"' in html
    assert "Shape bar by bar" in html and '<option value="chorale"' in html
    form = {
        "csrf_token": csrf(html), "model": "remi-transformer", "operation": "generate",
        "remi-transformer.style": "folk", "remi-transformer.bars": "2", "remi-transformer.temperature": "1.0",
        "remi-transformer.top_p": "0.95", "remi-transformer.seed": "11",
        "remi-transformer.rhythm": ["4", "-1"], "remi-transformer.polyphony": ["-1", "-1"],
        "performance-rnn.seconds": "20",  # another model's fields are ignored
    }  # fmt: skip
    r = client.post("/generate", data=form, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    job_id = r.headers["location"].rsplit("/", 1)[1]
    page = client.get(f"/jobs/{job_id}", follow_redirects=False)
    assert page.status_code in (200, 303)
    if page.status_code == 200:
        assert 'id="job-progress"' in page.text and f'data-job="{job_id}"' in page.text
    job = wait_job(client, job_id)
    assert job["params"]["rhythm"] == [4, None] and job["params"]["style"] == "folk"
    r = client.get(f"/jobs/{job_id}", follow_redirects=False)
    song_id = job["song_ids"][0]
    assert r.status_code == 303 and r.headers["location"] == f"/songs/{song_id}"

    song = client.get(f"/songs/{song_id}").text
    assert f'<audio id="player" controls preload="auto" src="/api/v1/songs/{song_id}/audio.ogg"' in song
    assert 'class="note"' in song  # the piano roll inline
    assert "Is it new?" in song and ("Original:" in song or "Near-copy:" in song)
    for kind in ("midi", "audio.ogg", "audio.wav", "pianoroll.svg"):
        assert f"/api/v1/songs/{song_id}/{kind}" in song
    assert song.count('id="keep-going"') == 1  # one panel: an operation, then a model
    for model, op in [
        ("remi-transformer", "continue"),
        ("performance-rnn", "continue"),
        ("musemorphose", "restyle"),
    ]:
        assert (
            f'data-model="{model}" data-op="{op}"' in song
        )  # the MuseMorphose of the models folder re-styles
    assert "Accompany" not in song  # no such family installed

    r = client.post(
        f"/songs/{song_id}/rate", data={"csrf_token": csrf(song), "value": "5"}, follow_redirects=False
    )
    assert r.status_code == 303
    assert "yours: 5" in client.get(f"/songs/{song_id}").text
    r = client.post(f"/songs/{song_id}/share", data={"csrf_token": csrf(song), "action": "share"})
    link = re.search(r'id="share-link" href="(/s/[^"]+)"', r.text).group(1)
    stranger = TestClient(client.app, base_url="http://127.0.0.1")
    shared = stranger.get(link)
    assert shared.status_code == 200 and "share=" in shared.text and "Make a share link" not in shared.text
    r = stranger.post(
        f"/songs/{song_id}/rate", data={"csrf_token": csrf(shared.text), "value": "3", "share": link[3:]},
        follow_redirects=False,
    )  # fmt: skip
    assert r.status_code == 303 and r.headers["location"] == f"{link}#rating"
    assert "4.0 from 2 ratings" in client.get(f"/songs/{song_id}").text

    history = client.get("/history").text
    assert (
        f'href="/songs/{song_id}"' in history and "★★★★★" in history and "belong to this browser" in history
    )
    assert stranger.get("/history").text.count("/songs/") == 0

    more = {"csrf_token": csrf(song), "model": "remi-transformer", "operation": "continue", "source_song": song_id,
            "remi-transformer.bars": "1"}  # fmt: skip
    r = client.post("/generate", data=more, follow_redirects=False)
    cont = wait_job(client, r.headers["location"].rsplit("/", 1)[1])
    assert cont["status"] == "done" and cont["params"]["source_song"] == song_id


def test_the_form_asks_for_key_tempo_and_instruments(client):
    """The home form offers every key and takes tempo and instruments as typed; a continuation from a song's
    page takes them too (under "More settings")."""
    html = client.get("/").text
    assert '<select name="remi-transformer.key">' in html and '<option value="F# minor"' in html
    assert 'name="performance-rnn.tempo"' in html and 'name="remi-transformer.instruments"' in html
    form = {
        "csrf_token": csrf(html), "model": "remi-transformer", "remi-transformer.bars": "2",
        "remi-transformer.seed": "3", "remi-transformer.key": "Bb major", "remi-transformer.tempo": "72",
        "remi-transformer.instruments": "Flute", "remi-transformer.style": "",
    }  # fmt: skip
    r = client.post("/generate", data=form, follow_redirects=False)
    job = wait_job(client, r.headers["location"].rsplit("/", 1)[1])
    assert job["status"] == "done", job
    assert job["params"]["key"] == "Bb major" and job["params"]["tempo"] == 72
    assert job["params"]["instruments"] == [73]
    song = client.get(f"/songs/{job['song_ids'][0]}").text
    assert re.search(r'id="song-key">· in (Bb major|G minor)', song) and "72 quarter notes a minute" in song
    panel = song[song.index('id="keep-going"') :]
    assert 'name="remi-transformer.key"' in panel and 'name="remi-transformer.tempo"' in panel


def test_bad_generate_form_shows_the_reason(client):
    token = csrf(client.get("/").text)
    r = client.post(
        "/generate", data={"csrf_token": token, "model": "remi-transformer", "remi-transformer.bars": "x"}
    )
    assert r.status_code == 422 and "bars: Input should be a valid integer" in r.text and "<html" in r.text
    r = client.post(
        "/generate", data={"csrf_token": token, "model": "remi-transformer", "remi-transformer.bars": "999"}
    )
    assert r.status_code == 422 and "bars may be at most 64 here, got 999" in r.text
    assert client.get("/api/v1/jobs").json()["jobs"] == []
    r = client.get("/songs/does-not-exist")
    assert r.status_code == 404 and "Not found" in r.text


def test_upload_page_and_continue_from_it(client):
    page = client.get("/upload").text
    assert 'enctype="multipart/form-data"' in page
    with open(FIXTURES / "tempo_changes.mid", "rb") as fh:
        r = client.post(
            "/upload",
            data={"csrf_token": csrf(page)},
            files={"file": ("mine.mid", fh)},
            follow_redirects=False,
        )
    assert r.status_code == 303 and r.headers["location"].startswith("/uploads/")
    detail = client.get(r.headers["location"]).text
    assert "mine.mid" in detail and 'class="note"' in detail and 'id="keep-going"' in detail
    assert 'data-model="remi-transformer" data-op="continue"' in detail
    r = client.post(
        "/upload", data={"csrf_token": csrf(page)}, files={"file": ("bad.mid", b"MThd\0\0\0\6garbage")}
    )
    assert r.status_code == 422 and 'id="upload-error"' in r.text and "cannot read this file" in r.text
    assert client.get("/upload").text.count("/uploads/") == 1


def test_signup_login_logout_pages(client):
    for path in ("/signup", "/login"):
        assert 'name="password"' in client.get(path).text
    token = csrf(client.get("/signup").text)
    r = client.post("/signup", data={"csrf_token": token, "username": "dora", "password": "short"})
    assert r.status_code == 422 and "at least 8 characters" in r.text
    r = client.post(
        "/signup",
        data={"csrf_token": token, "username": "dora", "password": "a long password"},
        follow_redirects=False,
    )
    assert r.status_code == 303
    home = client.get("/").text
    assert "dora" in home and "Log out" in home
    r = client.post("/logout", data={"csrf_token": csrf(home)}, follow_redirects=False)
    assert r.status_code == 303 and "dora" not in client.get("/").text
    token = csrf(client.get("/login").text)
    r = client.post("/login", data={"csrf_token": token, "username": "dora", "password": "wrong one!"})
    assert r.status_code == 401 and "wrong user name or password" in r.text
    r = client.post(
        "/login",
        data={"csrf_token": token, "username": "dora", "password": "a long password"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and "dora" in client.get("/history").text
