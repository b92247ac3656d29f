"""Songs made from a piece say so: continuing or re-styling the four-part chorale bwv66.6 (uploaded as MIDI,
its parts on four instruments) keeps its parts and programs for the bars kept, the title names the piece and
what was added, and history and the song page link to the source."""

import html
import re

import music21
import symusic

from museforge.data.formats import load_score
from museforge.tokenizers.attributes import bar_bounds
from museforge.web.jobs import song_title
from web.conftest import api_token, finished_job, song_midi, upload

PROGRAMS = (52, 40, 41, 32)  # choir aahs, violin, viola, contrabass
PARTS = ["Soprano", "Alto", "Tenor", "Bass"]


def chorale_midi() -> bytes:
    score = load_score(music21.corpus.getWork("bach/bwv66.6"))
    for track, program in zip(score.tracks, PROGRAMS, strict=True):
        track.program = program
    return score.dumps_midi()


def notes(track: symusic.Track, keep=lambda t: True) -> list[tuple[int, int, int]]:
    return sorted((n.time, n.duration, n.pitch) for n in track.notes if keep(n.time))


def history_row(client, song_id: str) -> str:
    page = client.get("/history").text
    return re.search(rf'<tr><td><a href="/songs/{song_id}">.*?</tr>', page, re.S).group(0)


def test_continuing_the_chorale_keeps_its_parts_and_says_what_it_is(client):
    h = api_token(client)
    data = chorale_midi()
    source = symusic.Score.from_midi(data)
    up = upload(client, h, "bwv66.6.mid", data)
    body = {"model": "remi-transformer", "operation": "continue", "source_upload": up["id"], "bars": 2}
    done = finished_job(client, h, body)
    song, score = song_midi(client, done)
    assert song["title"] == "bwv66.6 + 2 bars (REMI Transformer)"
    assert song["meta"]["source"] == {"kind": "upload", "id": up["id"], "title": "bwv66.6"}
    assert [(t.name, t.program) for t in score.tracks[:4]] == list(zip(PARTS, PROGRAMS, strict=True))
    scale = score.tpq / source.tpq
    for kept, part in zip(score.tracks[:4], source.tracks, strict=True):  # every bar of it, note for note
        assert notes(kept) == [(round(t * scale), round(d * scale), p) for t, d, p in notes(part)]
    end = int(bar_bounds(source)[-1]) * scale
    new = score.tracks[4:]
    assert [t.name for t in new] == ["remi-transformer continuation"]
    assert min(n.time for n in new[0].notes) >= end  # the model's bars come after the chorale's

    row = history_row(client, song["id"])
    assert f'<a href="/uploads/{up["id"]}">bwv66.6</a>' in row
    page = client.get(f"/songs/{song['id']}").text
    assert re.search(rf'id="made-from">Made from <a href="/uploads/{up["id"]}">bwv66.6</a>', page)

    # a song made from that song names it in turn
    more = finished_job(
        client, h,
        {"model": "remi-transformer", "operation": "continue", "source_song": song["id"], "bars": 1,
         "primer_bars": 4},
    )  # fmt: skip
    again, out = song_midi(client, more)
    first = "the first 4 bars of bwv66.6 + 2 bars (REMI Transformer)"
    assert again["title"] == f"{first} + 1 bar (REMI Transformer)"
    assert [t.name for t in out.tracks][:4] == PARTS
    link = f'<a href="/songs/{song["id"]}">{html.escape(song["title"])}</a>'
    assert link in history_row(client, again["id"])


def test_restyling_some_bars_of_the_chorale_keeps_its_parts_elsewhere(client):
    h = api_token(client)
    data = chorale_midi()
    source = symusic.Score.from_midi(data)
    up = upload(client, h, "bwv66.6.mid", data)
    body = {"model": "musemorphose", "operation": "restyle", "source_upload": up["id"], "rhythm_shift": 2,
            "restyle_bars": "2-3", "seed": 1}  # fmt: skip
    song, score = song_midi(client, finished_job(client, h, body))
    assert song["title"] == "bwv66.6, bars 2-3 re-styled (MuseMorphose)"
    lines = bar_bounds(source)
    scale = score.tpq / source.tpq

    def outside(tick: int) -> bool:
        return not lines[1] * scale <= tick < lines[3] * scale

    def kept(part: symusic.Track) -> list[tuple]:
        return [
            (round(t * scale), round(d * scale), p) for t, d, p in notes(part) if outside(round(t * scale))
        ]

    # each part re-played on its own: four tracks, the source's own notes outside bars 2-3
    assert [(t.name, t.program) for t in score.tracks] == list(zip(PARTS, PROGRAMS, strict=True))
    for mine, part in zip(score.tracks, source.tracks, strict=True):
        mine_outside = [n for n in notes(mine) if outside(n[0])]
        assert [(t, p) for t, _, p in mine_outside] == [(t, p) for t, _, p in kept(part)]
        # a note tied into a re-played bar ends where that bar strikes its pitch again
        assert all(d <= want for (_, d, _), (_, want, _) in zip(mine_outside, kept(part), strict=True))
    song, score = song_midi(client, finished_job(client, h, {**body, "parts": "together"}))
    assert [(t.name, t.program) for t in score.tracks[:4]] == list(zip(PARTS, PROGRAMS, strict=True))
    for mine, part in zip(score.tracks[:4], source.tracks, strict=True):
        assert notes(mine) == kept(part)
    assert all(not outside(n.time) for t in score.tracks[4:] for n in t.notes)


def test_titles_name_the_source_and_what_was_added():
    cont = {"operation": "continue", "bars": 8, "seed": 1}
    assert song_title(cont, "transformer", "bwv66.6") == "bwv66.6 + 8 bars (REMI Transformer)"
    assert (
        song_title({**cont, "primer_bars": 1}, "musemorphose", "tune")
        == "the first 1 bar of tune + 8 bars (MuseMorphose)"
    )
    perf = {"operation": "continue", "seconds": 15.0, "seed": 1}
    assert song_title(perf, "performance_rnn", "bwv66.6") == "bwv66.6 + 15 s (Performance RNN)"
    restyle = {"operation": "restyle", "restyle_bars": "5-8", "seed": 1}
    assert song_title(restyle, "musemorphose", "bwv66.6") == "bwv66.6, bars 5-8 re-styled (MuseMorphose)"
    band = {"operation": "accompany", "style": "chorale", "bars": 8, "seed": 1}
    assert song_title(band, "musegan", "melody") == "melody + chorale accompaniment (MuseGAN)"
    assert song_title({"style": "folk", "bars": 4, "seed": 2}, "transformer") == "Folk, 4 bars, seed 2"
