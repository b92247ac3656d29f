"""Output controls on real files: key names parsed, transposition kept in MIDI's range, tempo maps scaled in
proportion, instruments set on pitched tracks only."""

from __future__ import annotations

from pathlib import Path

import pytest
import symusic

from museforge.generation.output import (
    KeyRequest,
    gm_program,
    key_choices,
    parse_key,
    transpose,
    transposition,
    with_programs,
    with_tempo,
)
from museforge.metrics.key import Key

DATA = Path(__file__).parent.parent / "data"


@pytest.mark.parametrize(
    ("text", "tonic", "mode"),
    [("A minor", 9, "minor"), ("am", 9, "minor"), ("F#", 6, None), ("Bb major", 10, "major"),
     ("eb min", 3, "minor"), ("Bbm", 10, "minor"), ("B", 11, None), ("C♯ major", 1, "major")],
)  # fmt: skip
def test_key_names(text, tonic, mode):
    assert parse_key(text) == KeyRequest(tonic, mode)


@pytest.mark.parametrize("text", ["H minor", "A dorian", "", "C##x"])
def test_unknown_keys_are_refused_by_name(text):
    with pytest.raises(ValueError, match="unknown key"):
        parse_key(text)


def test_every_offered_key_parses_back_to_itself():
    choices = key_choices()
    assert len(choices) == 36
    assert all(str(parse_key(value)) == value for value, _ in choices)


def test_instruments_by_number_or_name():
    assert [gm_program(v) for v in ("40", 42, "violin", "Acoustic Grand Piano")] == [40, 42, 40, 0]
    for bad in ("128", "Kazoo", "-1"):
        with pytest.raises(ValueError, match="unknown instrument"):
            gm_program(bad)


def test_transposition_takes_the_short_way_unless_it_leaves_midi():
    score = symusic.Score.from_file(str(DATA / "single_track.mid"))
    assert transposition(Key(0, "major"), 5, score) == 5
    assert transposition(Key(0, "major"), 7, score) == -5
    high = symusic.Score(480)
    track = symusic.Track("top", 0, False)
    track.notes.append(symusic.Note(0, 480, 125, 80))
    high.tracks.append(track)
    assert transposition(Key(0, "major"), 5, high) == -7  # +5 would pass 127


def test_transpose_moves_pitched_notes_and_leaves_drums():
    score = symusic.Score.from_file(str(DATA / "multitrack_drums.mid"))
    moved = transpose(score, 3)
    for before, after in zip(score.tracks, moved.tracks, strict=True):
        shift = 0 if before.is_drum else 3
        assert [n.pitch + shift for n in before.notes] == [n.pitch for n in after.notes]
        assert [n.start for n in before.notes] == [n.start for n in after.notes]


def test_tempo_changes_keep_their_proportion():
    score = symusic.Score.from_file(str(DATA / "tempo_changes.mid"))
    assert len(score.tempos) > 1
    slower = with_tempo(score, 60.0)
    assert slower.tempos[0].qpm == pytest.approx(60.0, rel=1e-4)
    ratios = [t.qpm / score.tempos[0].qpm for t in score.tempos]
    assert [t.qpm / 60.0 for t in slower.tempos] == pytest.approx(ratios, rel=1e-4)
    assert [t.time for t in slower.tempos] == [t.time for t in score.tempos]


def test_a_score_without_tempo_gets_the_asked_one():
    assert with_tempo(symusic.Score(480), 90.0).tempos[0].qpm == pytest.approx(90.0, rel=1e-4)


def test_instruments_go_to_pitched_tracks_in_order():
    score = symusic.Score.from_file(str(DATA / "multitrack_drums.mid"))
    pitched = [t for t in score.tracks if not t.is_drum]
    assert len(pitched) >= 2
    out = with_programs(score, [40])
    programs = [t.program for t in out.tracks if not t.is_drum]
    assert programs == [40] + [t.program for t in pitched[1:]]
    assert [t.program for t in out.tracks if t.is_drum] == [t.program for t in score.tracks if t.is_drum]
