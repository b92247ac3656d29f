"""The MuseGAN family in the app, on the real SQLite store with a tiny MuseGAN trained here on real four-part
music (two Bach chorales as "chorale", a Palestrina Agnus as "renaissance"): genres listed and offered, generate →
job → song with the model's four tracks and programs, accompaniment of an uploaded melody and of a chorale part
(the kept track note for note), and bad track mappings refused before anything is stored."""

import io
from pathlib import Path

import music21
import numpy as np
import pytest
import soundfile
import symusic
import torch
from fastapi.testclient import TestClient

from conftest import FIXTURES
from museforge.data.formats import load_score
from museforge.families.musegan.gan import PART_TRACKS, GANTrainer
from museforge.families.musegan.model import MuseGAN, MuseGANConfig
from museforge.families.serving import clear_model_cache
from museforge.metrics.originality import OriginalityIndex
from museforge.models.checkpoint import save_checkpoint
from museforge.models.zoo import ORIGINALITY_FILE
from museforge.tokenizers.pianoroll import PianoRollConfig, PianoRollTokenizer
from museforge.training.trainer import TrainConfig
from museforge.web import create_app
from web.conftest import api_token, csrf, finished_job, make_settings, song_midi, upload, wait_job

TOK = PianoRollTokenizer(PianoRollConfig(tracks=PART_TRACKS, assign="order"))
PROGRAMS = [t["program"] for t in PART_TRACKS]
TRAINING = {"chorale": ("bach/bwv66.6", "bach/bwv7.7"), "renaissance": ("palestrina/Agnus_03",)}


@pytest.fixture(scope="module")
def musegan_folder(tmp_path_factory) -> Path:
    """A models folder holding one MuseGAN, trained a few WGAN-GP steps on 4-bar phrases of real pieces."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("gan-models")
    scores, phrases = [], []
    for genre, names in enumerate(TRAINING.values()):
        for name in names:
            score = load_score(music21.corpus.getWork(name))
            scores.append(score)
            roll = TOK.encode(score)  # [4, bars, 48, 84]
            phrases += [
                {"roll": torch.as_tensor(roll[:, b : b + 4] > 0), "genre": torch.tensor(genre)}
                for b in range(0, roll.shape[1] - 3, 2)
            ]
    torch.manual_seed(0)
    config = MuseGANConfig(
        n_tracks=4, genres=tuple(TRAINING), g_width=4, d_width=4, latent_dim=32, genre_dim=8
    )
    model = MuseGAN(config)
    train = TrainConfig(
        out_dir=str(root / "run"), batch_size=8, max_steps=6, lr=1e-3, beta1=0.5, beta2=0.9, warmup_steps=0,
        min_lr_ratio=1.0, weight_decay=0.0, grad_clip=None, progress=False, epochs=50, checkpoint_every=100_000,
    )  # fmt: skip
    GANTrainer(model, phrases, train, track_names=[t["name"] for t in PART_TRACKS]).fit()
    ckpt = save_checkpoint(root / "musegan", model.eval(), tokenizer=TOK.state_dict(), step=6, metrics={})
    (ckpt / "MODEL_CARD.md").write_text("# Tiny four-part MuseGAN for tests\n", encoding="utf-8")
    OriginalityIndex.build(scores, source="test pieces").save(ckpt / ORIGINALITY_FILE)
    torch.set_num_threads(threads)
    return root


@pytest.fixture
def client(tmp_path, musegan_folder):
    clear_model_cache()
    with TestClient(
        create_app(make_settings(tmp_path / "var", musegan_folder)), base_url="http://127.0.0.1"
    ) as c:
        yield c


def job(client, headers, **body) -> dict:
    return finished_job(client, headers, {"model": "musegan", **body})


def notes(track) -> list[tuple[int, int, int, int]]:
    return [(n.time, n.duration, n.pitch, n.velocity) for n in track.notes]


def test_musegan_lists_genres_generates_four_tracks_and_offers_accompaniment(client):
    h = api_token(client)
    listed = client.get("/api/v1/models").json()["models"]
    gan = next(m for m in listed if m["name"] == "musegan")
    assert gan["family"] == "musegan" and gan["styles"] == ["chorale", "renaissance"]
    assert [o["name"] for o in gan["operations"]] == ["generate", "accompany"]
    controls = {c["name"]: c for c in gan["controls"]}
    assert [v for v, _ in controls["style"]["choices"]] == ["chorale", "renaissance"]
    assert [v for v, _ in controls["tracks"]["choices"]] == ["soprano", "alto", "tenor", "bass"]
    home = client.get("/").text
    assert 'name="musegan.style"' in home and '<option value="renaissance"' in home
    assert 'name="musegan.binarize"' in home

    done = job(client, h, style="renaissance", bars=6, seed=5)
    song, score = song_midi(client, done)
    assert song["title"] == "Renaissance, 6 bars, seed 5" and song["meta"]["family"] == "musegan"
    assert [t.program for t in score.tracks] == PROGRAMS
    assert [t.name for t in score.tracks] == [t["name"] for t in PART_TRACKS]
    assert score.note_num() == song["meta"]["notes"] > 0
    assert score.end() <= 6 * 4 * score.tpq  # chained phrases cut to the bars asked for
    assert song["originality"]["index_source"].endswith(ORIGINALITY_FILE)
    samples, rate = soundfile.read(io.BytesIO(client.get(song["urls"]["ogg"]).content))
    assert rate == 44100 and np.abs(samples).max() > 0.05
    _, twin = song_midi(client, job(client, h, style="renaissance", bars=6, seed=5))
    assert twin.dumps_midi() == score.dumps_midi()  # the seed makes it again

    page = client.get(f"/songs/{song['id']}").text
    assert page.count('class="note"') == song["meta"]["notes"]  # every track in the piano roll
    assert 'data-model="musegan" data-op="accompany"' in page and 'name="musegan.track.bass"' in page
    assert 'value="continue"' not in page  # a MuseGAN cannot continue a piece

    # accompany the generated song: keep its bass, let the model play the upper voices again
    kept = job(client, h, operation="accompany", source_song=song["id"], tracks={"bass": 3}, seed=1)
    accompanied, out = song_midi(client, kept)
    assert notes(out.tracks[3]) == notes(score.tracks[3])
    assert accompanied["params"]["tracks"] == {"bass": 3}
    assert accompanied["title"] == "Renaissance, 6 bars, seed 5 + chorale accompaniment (MuseGAN)"


def test_accompany_an_uploaded_melody_keeps_it_note_for_note(client):
    h = api_token(client)
    melody = (FIXTURES / "single_track.mid").read_bytes()
    up = upload(client, h, "melody.mid", melody)
    done = job(client, h, operation="accompany", source_upload=up["id"], tracks={"soprano": 0}, seed=2)
    song, score = song_midi(client, done)
    given = symusic.Score.from_midi(melody)
    assert len(score.tracks) == 4 and score.tpq == given.tpq
    assert notes(score.tracks[0]) == notes(given.tracks[0])  # the whole melody (4 bars), untouched
    assert score.tracks[0].name == "Melody" and score.tracks[0].program == given.tracks[0].program
    assert [t.program for t in score.tracks[1:]] == PROGRAMS[1:]
    assert sum(len(t.notes) for t in score.tracks[1:]) > 0  # the model played the other voices
    assert song["params"]["style"] == "chorale" and song["params"]["accompaniment_fit_f1"] >= 0.0


def test_accompany_a_chorale_part_through_the_upload_page_form(client):
    chorale = music21.corpus.getWork("bach/bwv66.6")
    page = client.get("/upload").text
    with open(chorale, "rb") as fh:
        r = client.post("/upload", data={"csrf_token": csrf(page)}, files={"file": ("bwv66.6.mxl", fh)},
                        follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text
    upload_id = r.headers["location"].rsplit("/", 1)[1]
    detail = client.get(r.headers["location"]).text
    assert 'data-model="musegan" data-op="accompany"' in detail and 'name="musegan.track.alto"' in detail
    assert "keep 2: " in detail  # the piece's tracks are offered by number and name
    form = {
        "csrf_token": csrf(detail), "model": "musegan", "operation": "accompany", "source_upload": upload_id,
        "musegan.style": "chorale", "musegan.bars": "4", "musegan.binarize": "bernoulli", "musegan.seed": "9",
        "musegan.track.soprano": "", "musegan.track.alto": "1", "musegan.track.tenor": "",
        "musegan.track.bass": "",
    }  # fmt: skip
    r = client.post("/generate", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    done = wait_job(client, r.headers["location"].rsplit("/", 1)[1])
    assert done["status"] == "done", done
    song, score = song_midi(client, done)
    source = load_score(chorale)
    end = 4 * 4 * source.tpq
    assert score.tpq == source.tpq and len(score.tracks) == 4
    assert notes(score.tracks[1]) == [n for n in notes(source.tracks[1]) if n[0] < end]  # the alto, 4 bars
    assert song["params"]["binarize"] == "bernoulli" and song["params"]["tracks"] == {"alto": 1}
    assert "kept as given: alto = track 2" in client.get(f"/songs/{song['id']}").text


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"tracks": {"piano": 0}}, "unknown track 'piano'; this model's tracks: soprano, alto, tenor, bass"),
        ({"tracks": {"soprano": 3}}, "the score has tracks 0..0, not 3"),
        ({"tracks": {"soprano": -1}}, "tracks.soprano: Input should be greater than or equal to 0"),
        ({"tracks": {"soprano": 0, "alto": 0, "tenor": 0, "bass": 0}}, "leave at least one for the model"),
        ({}, "accompany needs tracks"),
        ({"tracks": {"soprano": 0}, "style": "jazz"}, "unknown genre 'jazz'"),
        ({"tracks": {"soprano": 0}, "temperature": 0.8}, "does not take temperature"),
        ({"tracks": {"soprano": 0}, "source_upload": None}, "needs a source piece"),
        ({"operation": "generate", "tracks": {"soprano": 0}, "source_upload": None}, "tracks are for"),
    ],
)
def test_bad_accompaniment_requests_are_refused_and_store_nothing(client, body, message):
    h = api_token(client)
    up = upload(client, h, "melody.mid", (FIXTURES / "single_track.mid").read_bytes())
    request = {"model": "musegan", "operation": "accompany", "source_upload": up["id"], **body}
    r = client.post("/api/v1/jobs", json=request, headers=h)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert (
        client.get("/api/v1/jobs").json()["jobs"] == [] and client.get("/api/v1/songs").json()["songs"] == []
    )


def test_bad_track_number_in_the_accompany_form(client):
    page = client.get("/upload").text
    with open(FIXTURES / "single_track.mid", "rb") as fh:
        r = client.post("/upload", data={"csrf_token": csrf(page)}, files={"file": ("m.mid", fh)},
                        follow_redirects=False)  # fmt: skip
    upload_id = r.headers["location"].rsplit("/", 1)[1]
    form = {"csrf_token": csrf(page), "model": "musegan", "operation": "accompany", "source_upload": upload_id,
            "musegan.track.soprano": "first"}  # fmt: skip
    r = client.post("/generate", data=form)
    assert r.status_code == 422 and "track.soprano must be a track number" in r.text
    assert client.get("/api/v1/jobs").json()["jobs"] == []
