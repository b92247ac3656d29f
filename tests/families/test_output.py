"""Key, tempo and instruments on every shipped model: the result is in the asked key (or, where a transposition
cannot change the mode, its relative), a piece brought along is transposed before the model hears it, and the
same seed gives the same song."""

from __future__ import annotations

import music21
import pytest
import symusic

from museforge.data.formats import load_score
from museforge.families.output import KEY_TRIES, target_tonic
from museforge.families.serving import generate_song
from museforge.generation.output import KeyRequest, parse_key, transpose
from museforge.metrics.key import Key, estimate_key
from museforge.models.zoo import list_models

SHIPPED = sorted(m.name for m in list_models())
LENGTH = {"bars": 4}  # every family but the Performance RNN counts bars


def options(model: str) -> dict:
    return {"seconds": 6.0} if model == "performance-rnn" else dict(LENGTH)


def notes(score: symusic.Score) -> list[tuple]:
    return sorted((t.is_drum, n.start, n.duration, n.pitch) for t in score.tracks for n in t.notes)


def reached(params: dict, wanted: KeyRequest) -> bool:
    """The song ended in the asked key, or in the other mode's relative (the same key signature)."""
    key = parse_key(params["in_key"])
    return key.tonic == target_tonic(Key(0, key.mode), wanted)


@pytest.mark.parametrize("model", SHIPPED)
def test_every_family_writes_in_the_key_tempo_and_instruments_asked(model):
    song = generate_song(model, seed=11, key="D", tempo=100, instruments="Violin, Cello", **options(model))[0]
    found = estimate_key(song.score)
    assert found is not None and found.tonic == 2 and song.params["in_key"] == str(found)
    assert song.score.tempos[0].qpm == pytest.approx(100.0, rel=1e-4)
    pitched = [t.program for t in song.score.tracks if not t.is_drum]
    assert pitched[:2] == [40, 42][: len(pitched)]
    plain = generate_song(model, seed=11, **options(model))[0]
    assert notes(song.score) == notes(transpose(plain.score, song.params["transposed"]))


@pytest.mark.parametrize("asked", ["A minor", "Eb major"])
def test_a_mode_is_drawn_for_and_the_same_seed_gives_the_same_song(asked):
    wanted = parse_key(asked)
    first = generate_song("remi-transformer", seed=5, key=asked, bars=4)[0]
    assert 1 <= first.params["key_tries"] <= KEY_TRIES
    assert reached(first.params, wanted)
    if parse_key(first.params["in_key"]).mode != wanted.mode:
        assert first.params["key_tries"] == KEY_TRIES  # gave up on the mode only after every draw
    again = generate_song("remi-transformer", seed=first.params["seed"], key=asked, bars=4)[0]
    assert notes(again.score) == notes(first.score)


def test_a_continued_piece_is_transposed_before_the_model_hears_it():
    source = load_score(music21.corpus.getWork("bach/bwv66.6"))  # F# minor
    song = generate_song("remi-transformer", primer=source, primer_bars=4, bars=4, seed=3, key="A minor")[0]
    assert song.params["transposed"] == 3
    kept = transpose(source, 3).clip(0, song.score.tpq * 4 * 4, clip_end=False)
    start = song.score.tpq * 4 * 4
    mine = sorted((n.start, n.pitch) for t in song.score.tracks for n in t.notes if n.start < start)
    theirs = sorted((n.start, n.pitch) for t in kept.tracks for n in t.notes if n.start < start)
    assert mine == theirs
    assert parse_key(song.params["in_key"]).tonic in (9, 0)  # A minor, or its relative C major


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("key", "H minor", "unknown key"), ("instruments", "Kazoo", "unknown instrument"),
     ("tempo", 1000, "less than or equal to 300"), ("tempo", float("nan"), "finite")],
)  # fmt: skip
def test_bad_output_controls_are_refused_by_name(field, value, message):
    with pytest.raises(ValueError, match=message):
        generate_song("remi-transformer", bars=2, **{field: value})
