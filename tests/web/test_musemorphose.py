"""The MuseMorphose family in the app, with the tiny MuseMorphose of the shared models folder (trained here on
two Bach chorales and three Essen folk songs): listed with its operations and controls, generate with a per-bar
rhythm/polyphony plan, re-style an uploaded chorale (every bar) and an uploaded melody (some bars, through the
upload page's form, the others kept note for note), and bad re-style requests refused before anything is
stored."""

import music21
import pytest
import symusic
from fastapi.testclient import TestClient

from conftest import FIXTURES
from museforge.data.formats import load_score
from museforge.data.musemorphose import bar_classes_from_tokens
from museforge.tokenizers import build_tokenizer
from museforge.web import create_app
from web.conftest import api_token, csrf, finished_job, make_settings, song_midi, upload, wait_job

REMI = build_tokenizer("remi")  # the tokenizer the tiny model was trained with


def job(client, headers, **body) -> dict:
    return finished_job(client, headers, {"model": "musemorphose", **body})


def bars(score: symusic.Score) -> int:
    return len(REMI.encode(score).bar_starts)


def notes_in(score: symusic.Score, start: int, end: int) -> list[tuple[int, int, int]]:
    """(onset, duration, pitch) of every note starting in [start, end) ticks, over all tracks."""
    return sorted(
        (n.time, n.duration, n.pitch) for t in score.tracks for n in t.notes if start <= n.time < end
    )


def test_models_list_musemorphose_with_its_operations_and_controls(client):
    listed = client.get("/api/v1/models").json()["models"]
    morph = next(m for m in listed if m["name"] == "musemorphose")
    assert morph["family"] == "musemorphose" and morph["family_label"] == "MuseMorphose"
    assert [o["name"] for o in morph["operations"]] == ["generate", "continue", "restyle"]
    assert [o["needs_source"] for o in morph["operations"]] == [False, True, True]
    controls = {c["name"]: c for c in morph["controls"]}
    assert {"style", "bars", "temperature", "top_p", "seed", "attributes"} <= set(controls)
    assert (controls["temperature"]["default"], controls["top_p"]["default"]) == (1.2, 0.9)  # the model's
    for name in ("rhythm_shift", "polyphony_shift"):
        assert controls[name]["kind"] == "shift"
        assert (controls[name]["minimum"], controls[name]["maximum"]) == (-7, 7)
    assert controls["restyle_bars"]["kind"] == "bar_range"
    assert (controls["candidates"]["default"], controls["candidates"]["maximum"]) == (1, 8)
    assert controls["guidance"]["kind"] == "strength" and controls["guidance"]["default"] == 1.0
    assert {"chorale", "folk"} <= set(morph["styles"])

    home = client.get("/").text
    assert 'data-model="musemorphose"' in home and 'name="musemorphose.temperature"' in home
    assert 'name="musemorphose.candidates"' in home
    assert 'name="musemorphose.rhythm_shift"' not in home  # re-style controls belong to a source's page
    assert 'name="musemorphose.guidance"' not in home


def test_generate_with_a_bar_plan_then_restyle_the_song_from_its_page(client):
    h = api_token(client)
    done = job(client, h, style="folk", bars=3, seed=3, rhythm=[1, 4, 6], polyphony=[0, None, 2])
    song, score = song_midi(client, done)
    assert song["params"]["attributes"] == [[1, 0], [4, None], [6, 2]]
    assert song["params"]["temperature"] == 1.2 and song["params"]["top_p"] == 0.9
    assert song["title"] == "Folk, 3 bars, seed 3" and song["meta"]["family"] == "musemorphose"
    assert bars(score) == 3 and score.note_num() == song["meta"]["notes"] > 0
    assert song["originality"]["index_source"].endswith("originality.npz")

    page = client.get(f"/songs/{song['id']}").text
    assert 'data-model="musemorphose" data-op="restyle"' in page
    assert 'name="musemorphose.rhythm_shift"' in page and 'name="musemorphose.restyle_bars"' in page
    assert 'data-model="musemorphose" data-op="continue"' in page
    form = {
        "csrf_token": csrf(page), "model": "musemorphose", "operation": "restyle", "source_song": song["id"],
        "musemorphose.rhythm_shift": "-1", "musemorphose.polyphony_shift": "0", "musemorphose.restyle_bars": "",
        "musemorphose.style": "", "musemorphose.seed": "6",
    }  # fmt: skip
    r = client.post("/generate", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    restyled = wait_job(client, r.headers["location"].rsplit("/", 1)[1])
    assert restyled["status"] == "done", restyled
    again, out = song_midi(client, restyled)
    assert again["params"]["operation"] == "restyle" and again["params"]["source_song"] == song["id"]
    assert again["params"]["restyle_bars"] is None and again["params"]["rhythm_shift"] == -1
    assert again["title"] == "Folk, 3 bars, seed 3 re-styled (MuseMorphose)" and bars(out) == 3
    assert "re-styled every bar, rhythm -1, polyphony +0" in client.get(f"/songs/{again['id']}").text

    more = job(client, h, operation="continue", source_song=song["id"], bars=1, polyphony=[1], seed=2)
    longer, out = song_midi(client, more)
    assert bars(out) == 4 and longer["params"]["operation"] == "continue"
    assert longer["title"] == "Folk, 3 bars, seed 3 + 1 bar (MuseMorphose)"


def test_restyle_an_uploaded_chorale_keeps_its_bars(client, tmp_path):
    h = api_token(client)
    midi = tmp_path / "bwv66.6.mid"
    load_score(music21.corpus.getWork("bach/bwv66.6")).dump_midi(str(midi))
    up = upload(client, h, midi.name, midi.read_bytes())
    source = load_score(midi)
    done = job(
        client, h, operation="restyle", source_upload=up["id"], rhythm_shift=2, polyphony_shift=-1, seed=4
    )
    assert done["operation"] == "restyle" and done["params"]["rhythm_shift"] == 2
    song, score = song_midi(client, done)
    n = bars(source)
    assert n >= 8 and bars(score) == n and song["params"]["source_bars"] == n
    params = song["params"]
    assert params["operation"] == "restyle" and params["source_upload"] == up["id"]
    assert (params["rhythm_shift"], params["polyphony_shift"], params["seed"]) == (2, -1, 4)
    assert params["parts"] == "each"  # four parts, each re-played on its own and kept as its own track
    assert [p["part"] for p in params["part_attributes"]] == [t.name for t in source.tracks]
    assert [(t.name, t.program) for t in score.tracks] == [(t.name, t.program) for t in source.tracks]
    for track, asked in zip(source.tracks, params["part_attributes"], strict=True):
        alone = symusic.Score(source.tpq)
        alone.time_signatures = source.time_signatures.copy()
        alone.tracks.append(track.copy())
        enc = REMI.encode(alone)
        measured_r, measured_p = bar_classes_from_tokens(enc.ids, enc.bar_starts, REMI)
        assert asked["attributes"] == [
            [min(7, int(r) + 2), max(0, int(p) - 1)] for r, p in zip(measured_r, measured_p, strict=True)
        ]
    assert song["title"] == "bwv66.6 re-styled (MuseMorphose)" and score.note_num() > 0
    assert song["originality"] is not None
    assert params["guidance"] == 1.0  # the default: the asked change amplified against the piece's own


def test_restyle_some_bars_of_an_upload_through_its_page_keeps_the_others(client):
    page = client.get("/upload").text
    melody = (FIXTURES / "single_track.mid").read_bytes()
    r = client.post("/upload", data={"csrf_token": csrf(page)}, files={"file": ("melody.mid", melody)},
                    follow_redirects=False)  # fmt: skip
    assert r.status_code == 303, r.text
    upload_id = r.headers["location"].rsplit("/", 1)[1]
    detail = client.get(r.headers["location"]).text
    assert 'data-model="musemorphose" data-op="restyle"' in detail
    assert 'name="operation" value="restyle"' in detail and 'name="musemorphose.polyphony_shift"' in detail
    assert 'name="musemorphose.guidance"' in detail and 'name="musemorphose.candidates"' in detail
    form = {
        "csrf_token": csrf(detail), "model": "musemorphose", "operation": "restyle", "source_upload": upload_id,
        "musemorphose.rhythm_shift": "3", "musemorphose.polyphony_shift": "0",
        "musemorphose.restyle_bars": " 2-3 ", "musemorphose.seed": "1", "musemorphose.candidates": "3",
        "musemorphose.guidance": "2.5",
    }  # fmt: skip
    r = client.post("/generate", data=form, follow_redirects=False)
    assert r.status_code == 303, r.text
    done = wait_job(client, r.headers["location"].rsplit("/", 1)[1])
    assert done["status"] == "done", done
    song, score = song_midi(client, done)
    assert song["params"]["restyle_bars"] == "2-3" and song["params"]["rhythm_shift"] == 3
    assert song["params"]["candidates"] == 3  # three tries per re-styled bar, the nearest kept
    assert song["params"]["guidance"] == 2.5
    given = symusic.Score.from_midi(melody)
    assert bars(score) == bars(given) == 4 and score.tpq == given.tpq
    bar = 4 * given.tpq  # 4/4
    assert notes_in(score, 0, bar) == notes_in(given, 0, bar)  # bar 1, the melody's own notes
    assert notes_in(score, 3 * bar, 4 * bar) == notes_in(given, 3 * bar, 4 * bar)  # bar 4
    assert (
        "re-styled bars 2-3, rhythm +3, polyphony +0, guidance 2.5" in client.get(f"/songs/{song['id']}").text
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"rhythm_shift": 8}, "rhythm_shift: Input should be less than or equal to 7"),
        ({"polyphony_shift": -9}, "polyphony_shift: Input should be greater than or equal to -7"),
        ({"rhythm_shift": 1, "restyle_bars": "3-9"}, "restyle_bars asks for bar 9, but the piece has 4 bars"),
        ({"rhythm_shift": 1, "restyle_bars": [5]}, "restyle_bars asks for bar 5, but the piece has 4 bars"),
        ({"rhythm_shift": 1, "restyle_bars": "3-2"}, "restyle_bars range '3-2' runs backwards"),
        ({"rhythm_shift": 1, "restyle_bars": "two"}, "restyle_bars must be bar numbers counted from 1"),
        ({"rhythm_shift": 1, "restyle_bars": [0, 1]}, "restyle_bars counts bars from 1, got 0"),
        ({"rhythm_shift": 1, "restyle_bars": ","}, "restyle_bars names no bar"),
        ({}, "restyle needs something to change"),
        ({"rhythm_shift": 1, "rhythm": [2]}, "give rhythm_shift (one shift for every re-styled bar) or rhythm"),
        ({"rhythm": [9]}, "rhythm.0: Input should be less than or equal to 7"),
        ({"polyphony": [1, 1, 1, 1, 1]}, "polyphony gives 5 classes but only 4 bars are re-styled"),
        ({"rhythm": [1, 2], "restyle_bars": "4"}, "rhythm gives 2 classes but only 1 bar is re-styled"),
        ({"rhythm_shift": 1, "bars": 8}, "restyle keeps the piece's length"),
        ({"rhythm_shift": 1, "density": 3}, "a MuseMorphose model does not take density"),
        ({"rhythm_shift": 1, "top_k": 5}, "a MuseMorphose model does not take top_k"),
        ({"rhythm_shift": 1, "tracks": {"soprano": 0}}, "a MuseMorphose model does not take tracks"),
        ({"rhythm_shift": 1, "style": "jazz"}, "unknown style 'jazz'"),
        ({"rhythm_shift": 1, "source_upload": None}, "re-style needs a source piece"),
        ({"operation": "generate", "rhythm_shift": 2, "source_upload": None}, "rhythm_shift is for the restyle"),
        ({"operation": "continue", "restyle_bars": "1-2", "bars": 2}, "restyle_bars is for the restyle operation"),
        ({"model": "remi-transformer", "operation": "continue", "rhythm_shift": 1},
         "a REMI Transformer model does not take rhythm_shift"),
        ({"model": "performance-rnn", "operation": "continue", "restyle_bars": "1"},
         "a Performance RNN model does not take restyle_bars"),
        ({"model": "remi-transformer", "operation": "continue", "candidates": 2},
         "a REMI Transformer model does not take candidates"),
        ({"rhythm_shift": 1, "candidates": 9}, "less than or equal to 8"),
        ({"rhythm_shift": 1, "guidance": 4.5}, "less than or equal to 4"),
        ({"rhythm_shift": 1, "guidance": -1}, "greater than or equal to 0"),
        ({"operation": "continue", "guidance": 1, "bars": 2}, "guidance is for the restyle operation"),
    ],
)  # fmt: skip
def test_bad_restyle_requests_are_refused_and_store_nothing(client, body, message):
    h = api_token(client)
    up = upload(client, h, "melody.mid", (FIXTURES / "single_track.mid").read_bytes())
    request = {"model": "musemorphose", "operation": "restyle", "source_upload": up["id"], **body}
    r = client.post("/api/v1/jobs", json=request, headers=h)
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert (
        client.get("/api/v1/jobs").json()["jobs"] == [] and client.get("/api/v1/songs").json()["songs"] == []
    )


def test_restyle_is_bounded_by_the_bars_one_job_may_play(tmp_path, models_folder):
    """Re-styled bars are played again, so a long upload cannot ask for more of them than max_bars."""
    with TestClient(create_app(make_settings(tmp_path / "var", models_folder, max_bars=2))) as client:
        h = api_token(client)
        up = upload(client, h, "melody.mid", (FIXTURES / "single_track.mid").read_bytes())
        request = {
            "model": "musemorphose",
            "operation": "restyle",
            "source_upload": up["id"],
            "rhythm_shift": 1,
        }
        r = client.post("/api/v1/jobs", json=request, headers=h)
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == (
            "this would re-style 4 bars, more than the 2 one job may play: pick the bars with restyle_bars, "
            "e.g. '1-16'"
        )
        assert client.get("/api/v1/jobs").json()["jobs"] == []
        r = client.post("/api/v1/jobs", json={**request, "restyle_bars": "3-4"}, headers=h)
        assert r.status_code == 202, r.text
        assert wait_job(client, r.json()["id"])["status"] == "done"
