"""Augmentation keeps pitches in range, leaves drums alone and stretches time as asked."""

from __future__ import annotations

import numpy as np
import pytest

from museforge.score import note_array
from museforge.tokenizers.attributes import duration_seconds
from museforge.tokenizers.augment import allowed_shifts, random_transposition, stretch_tempo, transpose


def test_transpose_moves_pitched_notes_only(scores) -> None:
    score = scores["multitrack_drums"]
    up = transpose(score, 5)
    assert up is not None
    before, after = note_array(score), note_array(up)
    pitched = ~before["is_drum"]
    assert np.array_equal(np.sort(after["pitch"][~after["is_drum"]]), np.sort(before["pitch"][pitched] + 5))
    assert np.array_equal(np.sort(after["pitch"][after["is_drum"]]), np.sort(before["pitch"][~pitched]))
    assert note_array(score)["pitch"].max() == before["pitch"].max()  # input untouched


def test_transpose_refuses_to_leave_the_range(scores) -> None:
    score = scores["single_track"]  # MIDI 60..67
    assert transpose(score, 61) is None and transpose(score, 60) is not None
    assert transpose(score, 5, high=72) is not None and transpose(score, 6, high=72) is None
    assert transpose(score, -6, low=55) is None
    assert allowed_shifts(score, 6, low=58, high=69) == [-2, -1, 0, 1, 2]


def test_random_transposition_stays_in_range(scores) -> None:
    score = scores["chorale"]
    low, high = int(note_array(score)["pitch"].min()) - 3, int(note_array(score)["pitch"].max()) + 2
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(60):
        pitches = note_array(random_transposition(score, rng, max_shift=6, low=low, high=high))["pitch"]
        assert pitches.min() >= low and pitches.max() <= high
        seen.add(int(pitches.min()) - int(note_array(score)["pitch"].min()))
    assert seen == {-3, -2, -1, 0, 1, 2}


def test_stretch_tempo(scores) -> None:
    score = scores["tempo_changes"]
    slower = stretch_tempo(score, 2.0)
    assert duration_seconds(slower) == pytest.approx(2 * duration_seconds(score))
    assert [t.time for t in slower.tempos] == [t.time for t in score.tempos]
    assert note_array(slower)["time"].tolist() == note_array(score)["time"].tolist()
    with pytest.raises(ValueError, match="positive"):
        stretch_tempo(score, 0.0)
