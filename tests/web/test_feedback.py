"""What listeners say and do about songs is kept for the lab: each signal with the song, the version and request
that made it and the listener; a song keeps its tokens so it can be scored again under any version."""

import json
import re

from fastapi.testclient import TestClient

from museforge.store import open_repository
from museforge.web.app import create_app
from web.conftest import api_token, csrf, finished_job, wait_job


def _song(client, headers, **body) -> dict:
    done = finished_job(client, headers, {"model": "remi-transformer", "style": "folk", "bars": 2, **body})
    return client.get(done["song_urls"][0]).json()


def test_signals_are_kept_with_version_request_and_listener(client, settings):
    headers = api_token(client)
    song = _song(client, headers, seed=3)
    base = f"/api/v1/songs/{song['id']}"
    assert client.post(f"{base}/rating", json={"value": 4}, headers=headers).status_code == 200
    for kind in ("like", "replay", "skip"):
        assert client.post(f"{base}/feedback", json={"kind": kind}, headers=headers).status_code == 204
    client.get(f"{base}/midi")
    client.post("/api/v1/analytics/events", json={"kind": "play_end", "song_id": song["id"]}, headers=headers)

    r = client.post(f"{base}/feedback", json={"kind": "love"}, headers=headers)
    assert r.status_code == 422 and "like" in r.text
    r = client.post("/api/v1/songs/nope/feedback", json={"kind": "like"}, headers=headers)
    assert r.status_code == 404

    repo = open_repository(settings.var_dir)
    signals = repo.list_feedback(model="remi-transformer")
    assert [f.kind for f in signals] == ["rate", "like", "replay", "skip", "download", "play_end"]
    assert {f.song_id for f in signals} == {song["id"]} and len({f.listener for f in signals}) == 1
    assert signals[0].value == 4 and signals[0].request["seed"] == 3 and signals[0].request["style"] == "folk"
    assert all(f.version == song["params"]["version"] for f in signals)

    stored = repo.get_song(song_id=song["id"])
    kept = json.loads((settings.var_dir / stored.files["tokens"]).read_text())
    assert 1 <= kept["start"] < len(kept["tokens"])
    assert len(kept["tokens"]) - kept["start"] == song["meta"]["new_tokens"]
    repo.close()


def test_one_listeners_feedback_is_not_anothers(client, settings):
    headers = api_token(client)
    song = _song(client, headers)
    client.post(f"/api/v1/songs/{song['id']}/feedback", json={"kind": "dislike"}, headers=headers)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as other:
        other_headers = api_token(other)
        r = other.post(f"/api/v1/songs/{song['id']}/feedback", json={"kind": "like"}, headers=other_headers)
        assert r.status_code == 404  # not theirs, not shared with them
        theirs = _song(other, other_headers)
        other.post(f"/api/v1/songs/{theirs['id']}/feedback", json={"kind": "like"}, headers=other_headers)
    repo = open_repository(settings.var_dir)
    mine, yours = (repo.list_feedback(model="remi-transformer", listener=f.listener)
                   for f in repo.list_feedback(model="remi-transformer"))  # fmt: skip
    assert [f.kind for f in mine] == ["dislike"] and [f.kind for f in yours] == ["like"]
    repo.close()


def test_another_one_like_it_asks_again_and_says_this_one_missed(client, settings):
    headers = api_token(client)
    song = _song(client, headers, seed=5)
    page = client.get(f"/songs/{song['id']}")
    assert 'id="like"' in page.text and 'id="again"' in page.text and 'id="more-like-this"' in page.text
    token = csrf(page.text)
    r = client.post(f"/songs/{song['id']}/again", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/jobs/")
    job = wait_job(client, r.headers["location"].rsplit("/", 1)[1])
    assert job["status"] == "done"
    again = client.get(job["song_urls"][0]).json()
    assert again["params"]["style"] == "folk" and again["params"]["seed"] != 5
    r = client.post(
        f"/songs/{song['id']}/feedback", data={"csrf_token": token, "kind": "like"}, follow_redirects=False
    )
    assert r.status_code == 303
    repo = open_repository(settings.var_dir)
    r = client.post(
        f"/songs/{again['id']}/again", data={"csrf_token": token, "liked": "1"}, follow_redirects=False
    )
    assert (
        r.status_code == 303 and wait_job(client, r.headers["location"].rsplit("/", 1)[1])["status"] == "done"
    )
    kinds = [(f.kind, f.song_id) for f in repo.list_feedback(model="remi-transformer")]
    assert kinds == [("regenerate", song["id"]), ("like", song["id"]), ("like", again["id"])]
    repo.close()


def test_the_form_opens_on_the_model_and_style_a_listener_liked_most(client):
    headers = api_token(client)
    home = client.get("/").text
    assert re.search(r'<option value="remi-transformer"\s+selected', home)  # nothing liked yet: the default
    folk, chorale = _song(client, headers), _song(client, headers, style="chorale")
    performance = client.get(
        finished_job(client, headers, {"model": "performance-rnn", "seconds": 2})["song_urls"][0]
    ).json()
    for song, kind in ((folk, "like"), (chorale, "dislike"), (performance, "like")):
        client.post(f"/api/v1/songs/{song['id']}/feedback", json={"kind": kind}, headers=headers)
    home = client.get("/").text
    assert re.search(
        r'<option value="performance-rnn"\s+selected', home
    )  # REMI is liked 1 - 1 = 0 on balance
    remi = home.split('data-model="remi-transformer"')[1].split("</fieldset>")[0]
    assert re.search(r'<option value="folk"\s+selected', remi)
    assert re.search(
        r'<option value="remi-transformer"\s+selected', client.get("/?model=remi-transformer").text
    )
