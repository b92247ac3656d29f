"""Songs that never repeat: a listener asking again and again without a seed gets new songs each time; a song
that would repeat one they got is re-sampled (or the job says why it could not be), an asked seed is kept."""

import pytest
import symusic
from fastapi.testclient import TestClient

from museforge.data.metadata import content_id
from museforge.families.serving import clear_model_cache
from museforge.metrics.originality import OriginalityIndex, check_originality, is_near_copy
from museforge.web.app import create_app
from web.conftest import api_token, finished_job, make_settings, wait_job


@pytest.fixture
def client(tmp_path, models_folder):
    """The app with room for twenty asks a minute."""
    clear_model_cache()
    settings = make_settings(tmp_path / "var", models_folder, rate_limit_jobs=50, rate_limit_address_jobs=50)
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as c:
        yield c


def _score(client, song) -> symusic.Score:
    return symusic.Score.from_midi(client.get(song["urls"]["midi"]).content)


def _songs(client, headers, n, **body):
    out = []
    for _ in range(n):
        done = finished_job(
            client, headers, {"model": "remi-transformer", "style": "folk", "bars": 2, **body}
        )
        out.append(client.get(done["song_urls"][0]).json())
    return out


def test_twenty_asks_without_a_seed_give_twenty_new_songs(client):
    headers = api_token(client)
    songs = _songs(client, headers, 20)
    scores = [_score(client, s) for s in songs]
    assert len({content_id(s) for s in scores}) == 20
    for i in range(1, 20):  # none is a near-duplicate of one the listener got before it
        earlier = OriginalityIndex.build(scores[:i])
        assert not is_near_copy(check_originality(scores[i], earlier))
    assert all(s["params"]["tries"] >= 1 and s["params"]["seed_drawn"] for s in songs)


def test_a_song_that_would_repeat_is_resampled_or_refused_with_why(client):
    """Near-greedy sampling makes the same song again and again: the second ask must not deliver it."""
    headers = api_token(client)
    (first,) = _songs(client, headers, 1, temperature=0.05, top_p=0.05)
    r = client.post(
        "/api/v1/jobs",
        headers=headers,
        json={"model": "remi-transformer", "style": "folk", "bars": 2, "temperature": 0.05, "top_p": 0.05},
    )
    job = wait_job(client, r.json()["id"])
    if job["status"] == "failed":
        assert "could not make a song new to you in 8 tries" in job["error"]
    else:
        second = client.get(job["song_urls"][0]).json()
        assert second["params"]["tries"] > 1
        assert content_id(_score(client, second)) != content_id(_score(client, first))


def test_an_asked_seed_gives_the_same_song_again(client):
    headers = api_token(client)
    a, b = _songs(client, headers, 2, seed=11)
    assert content_id(_score(client, a)) == content_id(_score(client, b))
    assert a["params"]["tries"] == b["params"]["tries"] == 1 and not a["params"]["seed_drawn"]
