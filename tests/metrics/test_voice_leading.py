"""Voice-leading metrics: hand-counted small passages, and properties of Bach chorales read with their parts."""

import itertools
import math

import music21
import numpy as np
import pytest
from music21 import note, voiceLeading

from museforge.data.formats import load_score
from museforge.metrics.voice_leading import (
    REST,
    harmonic_moments,
    mean_voice_range,
    parallel_fifths_octaves_rate,
    voice_crossing_rate,
    voice_leading_metrics,
    voice_ranges,
)


def quarters(*pitches: int) -> list[tuple[float, float, int]]:
    """One quarter note per pitch, from beat 0."""
    return [(beat, 1, pitch) for beat, pitch in enumerate(pitches)]


def chorale(name: str):
    return load_score(music21.corpus.getWork(name))


def test_moments_follow_every_onset_rest_and_change(make):
    # Upper: half notes C5 D5; lower: quarters C4 D4 E4 F4 -> a moment on every quarter.
    score = make(([(0, 2, 72), (2, 2, 74)], False), (quarters(60, 62, 64, 65), False))
    assert harmonic_moments(score).tolist() == [[72, 60], [72, 62], [74, 64], [74, 65]]
    # Upper rests on beat 1; both voices re-strike their pitches on beat 3, which changes nothing.
    score = make(([(0, 1, 72), (2, 1, 74), (3, 1, 74)], False), (quarters(60, 62, 64, 64), False))
    assert harmonic_moments(score).tolist() == [[72, 60], [REST, 62], [74, 64]]


def test_a_chord_track_is_heard_by_its_top_note(make):
    chords = [(0, 1, 60), (0, 1, 64), (0, 1, 67), (1, 1, 62), (1, 1, 65), (1, 1, 69)]
    score = make((chords, False), (quarters(48, 50), False), (quarters(36, 36), True))
    assert harmonic_moments(score).tolist() == [[67, 48], [69, 50]]  # drums are no voice
    assert voice_ranges(score) == [2.0, 2.0]


def test_one_parallel_fifth_in_three_moves(make):
    upper = quarters(72, 74, 72, 71)  # C5 D5 C5 B4
    lower = quarters(65, 67, 69, 64)  # F4 G4 A4 E4
    # fifth -> fifth, both up: parallel; then contrary motion; then similar motion into a fifth (hidden, not
    # parallel): 1 of 3 moves.
    assert parallel_fifths_octaves_rate(make((upper, False), (lower, False))) == pytest.approx(1 / 3)
    assert parallel_fifths_octaves_rate(make((lower, False), (upper, False))) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("upper", "lower", "expected"),
    [
        ((72, 74), (48, 50), 1.0),  # two octaves apart, both up a step
        ((72, 67), (72, 55), 1.0),  # unison -> octave, both down
        ((67, 69), (48, 50), 1.0),  # compound fifth (a twelfth) -> twelfth
        ((72, 79), (60, 55), 0.0),  # octave -> two octaves by contrary motion: cadential, not counted
        ((72, 74), (65, 68), 0.0),  # fifth -> diminished fifth
        ((72, 74), (65, 65), math.nan),  # oblique: the lower voice holds, no move where both move
    ],
)
def test_parallel_octaves_and_fifths_by_the_semitone(make, upper, lower, expected):
    rate = parallel_fifths_octaves_rate(make((quarters(*upper), False), (quarters(*lower), False)))
    assert rate == pytest.approx(expected, nan_ok=True)


def test_a_rest_breaks_the_move(make):
    upper = [(0, 1, 72), (2, 1, 74)]  # rests on beat 1
    lower = quarters(60, 62, 62)
    assert math.isnan(parallel_fifths_octaves_rate(make((upper, False), (lower, False))))


def test_crossing_counts_adjacent_voices_ordered_by_mean_pitch(make):
    # Tracks in the order alto, soprano, bass; the alto rises above the soprano once and meets it once.
    alto = quarters(67, 72, 74, 67)
    soprano = quarters(72, 72, 72, 72)
    bass = quarters(48, 48, 48, 48)
    score = make((alto, False), (soprano, False), (bass, False))
    # 4 moments x 2 adjacent pairs (bass-alto, alto-soprano); only beat 2 crosses (the unison on beat 1 does not).
    assert voice_crossing_rate(score) == pytest.approx(1 / 8)
    assert voice_ranges(score) == [7.0, 0.0, 0.0]
    assert voice_leading_metrics(score) == pytest.approx(
        {
            "n_voices": 3.0,
            "parallel_fifths_octaves_rate": math.nan,  # soprano and bass never move
            "voice_crossing_rate": 1 / 8,
            "mean_voice_range": 7 / 3,
            "repeated_note_rate": 6 / 9,  # soprano 3 of 3, alto 0 of 3, bass 3 of 3
        },
        nan_ok=True,
    )


def test_one_voice_has_no_pair_measures(cdef, make):
    numbers = voice_leading_metrics(cdef)
    assert numbers["n_voices"] == 1.0 and numbers["mean_voice_range"] == 5.0
    assert math.isnan(numbers["parallel_fifths_octaves_rate"]) and math.isnan(numbers["voice_crossing_rate"])
    empty = voice_leading_metrics(make())
    assert empty["n_voices"] == 0.0 and all(math.isnan(v) for k, v in empty.items() if k != "n_voices")
    assert voice_ranges(make()) == [] and math.isnan(mean_voice_range(make()))


def test_a_chorale_read_with_its_parts():
    score = chorale("bach/bwv66.6")
    numbers = voice_leading_metrics(score)
    assert numbers["n_voices"] == 4
    for name in ("parallel_fifths_octaves_rate", "voice_crossing_rate", "repeated_note_rate"):
        assert 0 <= numbers[name] <= 1
    # Bach avoids parallels and keeps his voices apart: both are rare, far below what a doubled line gives.
    assert numbers["parallel_fifths_octaves_rate"] < 0.05 and numbers["voice_crossing_rate"] < 0.05
    parts = music21.corpus.parse("bach/bwv66.6").parts
    spans = [max(p.ps for p in part.pitches) - min(p.ps for p in part.pitches) for part in parts]
    assert voice_ranges(score) == spans  # soprano, alto, tenor, bass as music21 reads them
    assert all(0 < span <= 24 for span in spans)


@pytest.mark.parametrize("shift", [-7, -12, -19, 0])
def test_a_line_doubled_at_a_perfect_interval_moves_only_in_parallels(shift):
    soprano = chorale("bach/bwv66.6")
    del soprano.tracks[1:]
    doubled = soprano.tracks[0].copy()
    doubled.shift_pitch(shift)
    soprano.tracks.append(doubled)
    assert parallel_fifths_octaves_rate(soprano) == 1.0
    assert voice_crossing_rate(soprano) == 0.0


@pytest.mark.parametrize("name", ["bach/bwv347", "bach/bwv40.8"])
def test_parallels_agree_with_music21_voice_leading_quartets(name):
    """music21 judges every two-voice move of the chorale; it also counts contrary (antiparallel) motion, which
    we leave out, so its verdict is narrowed to similar motion."""
    states = harmonic_moments(chorale(name))
    moves = parallels = 0
    for before, after in itertools.pairwise(states):
        for a, b in zip(*np.triu_indices(states.shape[1], k=1), strict=True):
            pitches = [int(before[a]), int(after[a]), int(before[b]), int(after[b])]
            if REST in pitches or pitches[0] == pitches[1] or pitches[2] == pitches[3]:
                continue
            quartet = voiceLeading.VoiceLeadingQuartet(*(note.Note(p) for p in pitches))
            moves += 1
            parallels += quartet.similarMotion() and (
                quartet.parallelFifth() or quartet.parallelUnisonOrOctave()
            )
    assert parallels > 0
    assert parallel_fifths_octaves_rate(chorale(name)) == pytest.approx(parallels / moves)
