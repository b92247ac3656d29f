"""MusPy-equal metrics: hand-computed values, equality with MusPy 0.5, and each documented difference."""

import math
from pathlib import Path

import music21
import muspy
import numpy as np
import pytest

from museforge.metrics import core

# (name, kwargs) of every metric MusPy defines, with the fixed-grid measure resolution filled in per score.
CASES = [
    ("pitch_range", {}),
    ("n_pitches_used", {}),
    ("n_pitch_classes_used", {}),
    ("empty_beat_rate", {}),
    ("empty_measure_rate", {"measure_resolution": None}),
    ("polyphony", {}),
    ("polyphony_rate", {}),
    ("polyphony_rate", {"threshold": 0}),
    ("pitch_in_scale_rate", {"root": 0, "mode": "major"}),
    ("pitch_in_scale_rate", {"root": 9, "mode": "minor"}),
    ("scale_consistency", {}),
    ("pitch_entropy", {}),
    ("pitch_class_entropy", {}),
    ("groove_consistency", {"measure_resolution": None}),
    ("drum_in_pattern_rate", {"meter": "duple"}),
    ("drum_in_pattern_rate", {"meter": "triple"}),
    ("drum_pattern_consistency", {}),
]


def muspy_music(score, tmp_path):
    """The same music in MusPy: the score written as MIDI and read back by MusPy's mido reader (ticks kept)."""
    path = tmp_path / "piece.mid"
    score.dump_midi(path)
    return muspy.read_midi(path, backend="mido")


def assert_same(ours: float, theirs: float, label: str) -> None:
    if math.isnan(theirs):
        assert math.isnan(ours), label
    else:
        assert ours == pytest.approx(float(theirs), rel=1e-12, abs=1e-12), label


def check_against_muspy(score, tmp_path) -> None:
    check_against_music(score, muspy_music(score, tmp_path))


def check_against_music(score, music) -> None:
    """Every metric MusPy defines equals MusPy's on ``music``, the same notes as ``score`` in MusPy."""
    assert music.resolution == score.tpq
    ours_notes = sorted((int(n.time), int(n.pitch), int(n.duration)) for t in score.tracks for n in t.notes)
    their_notes = sorted((n.time, n.pitch, n.duration) for t in music.tracks for n in t.notes)
    assert ours_notes == their_notes
    bar = round(score.tpq * 4 * score.time_signatures[0].numerator / score.time_signatures[0].denominator)
    for name, kwargs in CASES:
        kwargs = {k: (bar if v is None else v) for k, v in kwargs.items()}
        if name == "pitch_range" and not any(n.pitch for t in score.tracks if not t.is_drum for n in t.notes):
            continue  # a documented difference, tested on its own below
        assert_same(
            getattr(core, name)(score, **kwargs), getattr(muspy, name)(music, **kwargs), f"{name}{kwargs}"
        )


def test_equal_to_muspy_on_corpus_pieces(corpus_scores, tmp_path):
    assert len(corpus_scores) >= 15
    for score in corpus_scores.values():
        check_against_muspy(score, tmp_path)


def test_equal_to_muspy_on_fixtures(fixtures_dir, cdef, drum_loop, tmp_path):
    scores = [symusic_load(fixtures_dir / name) for name in ("single_track.mid", "multitrack_drums.mid")]
    for score in [*scores, cdef, drum_loop]:
        check_against_muspy(score, tmp_path)


PRIMITIVES = Path(music21.__file__).parent / "midi" / "testPrimitive"


def test_equal_to_muspy_read_midi_with_events_after_the_last_note(fixtures_dir):
    """Real MIDI files whose control changes outlast their notes, read by ``muspy.read_midi`` itself: MusPy's
    length counts those control changes (as track annotations) but not a later pitch bend, and every metric that
    depends on the length (empty beats, empty measures, polyphony rate, groove consistency) agrees with it.

    pedal_tail.mid is a chorale with its sustain pedal released after the last note; music21's own test files
    test04 (an orchestral score, 21 tracks) and test19 carry controller tails (and test19 a later pitch bend)."""
    paths = [fixtures_dir / "pedal_tail.mid", PRIMITIVES / "test04.mid", PRIMITIVES / "test19.mid"]
    for path in paths:
        score, music = symusic_load(path), muspy.read_midi(path, backend="mido")
        note_end = max(n.end for t in score.tracks for n in t.notes)
        muspy_length = max(t.get_end_time() for t in music.tracks)
        assert muspy_length > note_end, path.name  # the file has events after its last note
        assert core.piece_length(score) == muspy_length, path.name
        check_against_music(score, music)
    chorale = symusic_load(fixtures_dir / "pedal_tail.mid")
    bends = max(b.time for t in chorale.tracks for b in t.pitch_bends)
    assert bends > core.piece_length(chorale)  # the later pitch bend is not part of the length


def symusic_load(path):
    from museforge.data.formats import load_score

    return load_score(path)


def test_hand_values_cdef(cdef):
    assert core.pitch_range(cdef) == 5
    assert core.n_pitches_used(cdef) == 4
    assert core.n_pitch_classes_used(cdef) == 4
    assert core.polyphony(cdef) == 1.0
    assert core.polyphony_rate(cdef) == 0.0
    assert core.pitch_in_scale_rate(cdef, 0, "major") == 1.0
    assert core.pitch_in_scale_rate(cdef, 6, "major") == 0.25  # F# major holds only E# = F
    assert core.scale_consistency(cdef) == 1.0
    assert core.pitch_entropy(cdef) == pytest.approx(2.0)
    assert core.pitch_class_entropy(cdef) == pytest.approx(2.0)
    assert core.empty_beat_rate(cdef) == 0.0
    # Two measures (the last note ends on the bar line, which opens measure 1); measure 1 has no onset.
    assert core.groove_consistency(cdef) == pytest.approx(1 - 4 / 1920)
    assert math.isnan(core.drum_pattern_consistency(cdef))


def test_hand_values_polyphony(make):
    # C-E-G held for two beats, then C5 for one beat: ΣP = 3·960 + 480 over 1440 sounding ticks.
    score = make(([(0, 2, 60), (0, 2, 64), (0, 2, 67), (2, 1, 72)], False))
    assert core.polyphony(score) == pytest.approx(3360 / 1440)
    assert core.polyphony_rate(score) == pytest.approx(960 / 1440)
    assert core.polyphony_rate(score, threshold=3) == 0.0
    # Overlapping notes of one pitch sound as one pitch (a binary piano roll).
    overlap = make(([(0, 2, 60), (1, 2, 60)], False))
    assert core.polyphony(overlap) == 1.0


def test_hand_values_drum_loop(drum_loop):
    assert core.drum_in_pattern_rate(drum_loop, "duple") == 1.0
    # Kicks (8) and on-beat hats (8) of 24 notes lie on the triple grid; off-beat hats do not.
    assert core.drum_in_pattern_rate(drum_loop, "triple") == pytest.approx(16 / 24)
    assert core.drum_pattern_consistency(drum_loop) == 1.0
    assert core.n_pitches_used(drum_loop) == 0
    assert core.empty_beat_rate(drum_loop) == 0.0
    assert core.groove_consistency(drum_loop) == 1.0  # both bars have the same onsets


def test_empty_measure_rate_follows_bar_lines(make):
    # One 3/4 bar with a note, one empty 3/4 bar, a 2/4 bar with a note: 1 of 3 bars empty.
    score = make(([(0, 1, 60), (6.5, 0.5, 62)], False), sigs=((0, 3, 4), (6, 2, 4)))
    assert core.empty_measure_rate(score) == pytest.approx(1 / 3)
    assert math.isnan(core.groove_consistency(score))  # meter changes: no fixed measure grid


def test_difference_drums_only_pitch_range(drum_loop, tmp_path):
    """MusPy gives −127 for drums-only music; there is no pitched note, so no range: NaN."""
    assert muspy.pitch_range(muspy_music(drum_loop, tmp_path)) == -127
    assert math.isnan(core.pitch_range(drum_loop))


def test_difference_no_notes_pitch_range(make):
    """MusPy returns 0 for music without notes; the range of nothing is undefined: NaN."""
    silent = make(([], False))
    assert muspy.pitch_range(muspy.Music(resolution=480, tracks=[muspy.Track()])) == 0
    assert math.isnan(core.pitch_range(silent))


def test_difference_no_tracks_gives_nan_not_error(make):
    """MusPy raises on music without tracks (max() of an empty sequence); ours returns NaN."""
    music = muspy.Music(resolution=480)
    with pytest.raises(ValueError):
        muspy.empty_beat_rate(music)
    with pytest.raises(ValueError):
        muspy.polyphony(music)
    empty = make()
    for fn in (
        core.empty_beat_rate,
        core.empty_measure_rate,
        core.polyphony,
        core.polyphony_rate,
        core.groove_consistency,
        core.pitch_range,
        core.scale_consistency,
        core.pitch_entropy,
        core.pitch_class_entropy,
        core.drum_pattern_consistency,
    ):
        assert math.isnan(fn(empty)), fn.__name__
    assert core.n_pitches_used(empty) == 0


def test_difference_zero_measure_resolution_names_parameter(cdef):
    """MusPy divides by zero in empty_measure_rate; ours raises a ValueError naming the parameter."""
    with pytest.raises(ZeroDivisionError):
        muspy.empty_measure_rate(
            muspy.Music(resolution=480, tracks=[muspy.Track(notes=[muspy.Note(0, 60, 1)])]), 0
        )
    for fn in (core.empty_measure_rate, core.groove_consistency):
        with pytest.raises(ValueError, match="measure_resolution"):
            fn(cdef, measure_resolution=0)


def test_kept_convention_note_ending_on_beat_line(make):
    """Kept from MusPy: a note ending exactly on a beat line also marks that beat (quarters on beats 0 and 2
    leave beat 1 silent, yet the rate is 0). Documented in the module docstring."""
    score = make(([(0, 1, 60), (2, 1, 62)], False))
    assert core.empty_beat_rate(score) == 0.0
    assert core.empty_beat_rate(make(([(0, 1, 60), (3, 1, 62)], False))) == pytest.approx(1 - 4 / 5)


def test_bad_parameters_are_named(cdef):
    with pytest.raises(ValueError, match="mode"):
        core.pitch_in_scale_rate(cdef, 0, "dorian")
    with pytest.raises(ValueError, match="meter"):
        core.drum_in_pattern_rate(cdef, "quintuple")


def test_matches_numpy_piano_roll_on_a_chorale(chorales):
    """polyphony via the run-length profile equals the dense boolean piano roll MusPy builds."""
    score = next(iter(chorales.values()))
    notes = [(n.time, n.end, n.pitch) for t in score.tracks for n in t.notes]
    length = max(end for _, end, _ in notes)
    roll = np.zeros((length, 128), bool)
    for start, end, pitch in notes:
        roll[start:end, pitch] = True
    assert core.polyphony(score) == pytest.approx(roll.sum() / np.count_nonzero(roll.any(1)))
