"""Repetition/structure metrics and the originality index."""

import math

import numpy as np
import pytest

from museforge.metrics import structure
from museforge.metrics.originality import OriginalityIndex, check_originality, is_near_copy


def test_repeated_notes_and_longest_run(make):
    score = make(([(0, 1, 60), (1, 1, 60), (2, 1, 60), (3, 1, 62)], False))
    assert structure.repeated_note_rate(score) == pytest.approx(2 / 3)
    assert structure.longest_pitch_run(score) == 3


def test_chords_read_as_their_top_voice(make):
    chord = [(0, 1, 60), (0, 1, 64), (0, 1, 67), (1, 1, 60), (1, 1, 64), (1, 1, 67)]
    score = make((chord, False))
    assert structure.repeated_note_rate(score) == 1.0
    assert math.isnan(structure.repeated_note_rate(make(([(0, 1, 60)], False))))


def bar(offset, pitch):
    return [(offset + beat, 1, pitch) for beat in range(4)]


def test_structure_indicator_abab_vs_abcd(make):
    abab = make((bar(0, 60) + bar(4, 62) + bar(8, 60) + bar(12, 62), False))
    abcd = make((bar(0, 60) + bar(4, 62) + bar(8, 64) + bar(12, 65), False))
    assert structure.structure_indicator(abab) == pytest.approx(1.0)
    assert structure.structure_indicator(abcd) == pytest.approx(0.0)
    sim = structure.self_similarity(abab)
    assert sim.shape == (4, 4)
    assert sim[0, 2] == pytest.approx(1.0) and sim[0, 1] == pytest.approx(0.0)
    assert math.isnan(structure.structure_indicator(make((bar(0, 60), False))))


def test_real_chorales_return_more_than_a_shuffled_piece(chorales, make):
    rng = np.random.default_rng(1)
    real, shuffled = [], []
    for score in chorales.values():
        real.append(structure.structure_indicator(score))
        notes = [
            (n.time / score.tpq, n.duration / score.tpq, int(p))
            for t in score.tracks
            for n, p in zip(t.notes, rng.integers(40, 90, len(t.notes)), strict=True)
        ]
        shuffled.append(structure.structure_indicator(make((notes, False))))
    assert np.mean(real) > np.mean(shuffled) + 0.1


@pytest.fixture(scope="module")
def folk_index(folk_tunes):
    return OriginalityIndex.build(list(folk_tunes.values())[:4], n=8, source="altdeu10 first four")


def test_copied_piece_is_found_whole(folk_tunes, folk_index):
    tune = next(iter(folk_tunes.values()))
    result = check_originality(tune, folk_index)
    line = structure.melodic_lines(tune)[0]
    assert result.longest_run == len(line)
    assert result.phrase_share == 1.0 and result.copied_share == 1.0
    assert is_near_copy(result)
    transposed = check_originality(tune.shift_pitch(5), folk_index)
    assert transposed.longest_run == result.longest_run  # transposition-invariant


def test_unseen_pieces_and_partial_copies(folk_tunes, folk_index, make):
    unseen = [check_originality(t, folk_index) for t in list(folk_tunes.values())[4:]]
    assert all(not is_near_copy(r) for r in unseen)
    # Ten notes copied from an indexed tune, then a run the corpus does not hold.
    line = structure.melodic_lines(next(iter(folk_tunes.values())))[0]
    tpq = next(iter(folk_tunes.values())).tpq
    start = line["time"][0]
    copied = [((n["time"] - start) / tpq, n["duration"] / tpq, int(n["pitch"])) for n in line[:10]]
    end = copied[-1][0] + copied[-1][1]
    novel = [(end + i * 0.75, 0.75, 40 + (i * 7) % 13) for i in range(12)]
    result = check_originality(make((copied + novel, False), tpq=tpq), folk_index)
    assert result.longest_run == 10
    short = check_originality(make((copied[:8] + novel, False), tpq=tpq), folk_index)
    assert short.longest_run == 0  # eight notes are below the n + 1 = 9 notes an n-gram spans


def test_index_round_trip_and_speed(folk_tunes, folk_index, tmp_path):
    path = tmp_path / "index.npz"
    folk_index.save(path)
    loaded = OriginalityIndex.load(path)
    assert np.array_equal(loaded.hashes, folk_index.hashes)
    assert (loaded.n, loaded.n_pieces, loaded.source) == (8, 4, "altdeu10 first four")
    assert loaded.piece_ids == folk_index.piece_ids and len(loaded.piece_ids) == 4
    first = next(iter(folk_tunes.values()))
    assert loaded.holds(first) and not loaded.holds(first.shift_pitch(1))
    (tmp_path / "other.npz").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not an originality index"):
        OriginalityIndex.load(tmp_path / "other.npz")
    tune = next(iter(folk_tunes.values()))
    assert check_originality(tune, loaded) == check_originality(tune, folk_index)


def test_threshold_helper_and_parameters(folk_index):
    from museforge.metrics.originality import OriginalityResult

    assert is_near_copy(OriginalityResult(81, 0.0, 0.1, 4, 100))
    assert is_near_copy(OriginalityResult(0, 0.8, 0.1, 4, 100))
    assert is_near_copy(OriginalityResult(20, 0.0, 0.61, 4, 100))
    assert not is_near_copy(OriginalityResult(12, math.nan, math.nan, 0, 10))
    assert not is_near_copy(OriginalityResult(80, 0.75, 0.6, 4, 100))
    assert not is_near_copy(OriginalityResult(81, 0.0, 0.0, 4, 100), max_run=90)
    with pytest.raises(ValueError, match="max_phrase_share"):
        is_near_copy(OriginalityResult(0, 0.0, 0.0, 0, 0), max_phrase_share=2)
    with pytest.raises(ValueError, match="n must be"):
        OriginalityIndex.build([], n=1)


def alter_notes(score, share, rng):
    """A copy with ``share`` of each track's notes (at least one) moved by 1 or 2 semitones."""
    altered = score.copy()
    for track in altered.tracks:
        for i in rng.choice(len(track.notes), max(1, round(share * len(track.notes))), replace=False):
            track.notes[int(i)].pitch += int(rng.choice([-2, -1, 1, 2]))
    return altered


@pytest.fixture(scope="module")
def calibration(chorales, folk_tunes):
    """Eight chorales and four folk tunes indexed as "training data"; the others play held-out pieces."""
    chorale_list, folk_list = list(chorales.values()), list(folk_tunes.values())
    train = chorale_list[:8] + folk_list[:4]
    return OriginalityIndex.build(train), train, chorale_list[8:] + folk_list[4:]


def test_default_thresholds_flag_copies_of_real_pieces(calibration):
    index, train, _ = calibration
    rng = np.random.default_rng(0)
    for piece in train:
        for copy in (piece, piece.shift_pitch(5), piece.shift_pitch(-3), alter_notes(piece, 0.05, rng)):
            result = check_originality(copy, index)
            assert is_near_copy(result), result
    verbatim = check_originality(train[0], index)
    altered = check_originality(alter_notes(train[0], 0.05, rng), index)
    assert altered.copied_share < verbatim.copied_share == 1.0  # alterations break runs, the share survives
    assert altered.copied_share > 0.6


def test_default_thresholds_pass_other_real_pieces(calibration):
    index, _, held_out = calibration
    results = [check_originality(piece, index) for piece in held_out]
    assert not any(is_near_copy(r) for r in results), results
    assert all(r.copied_share < 0.5 for r in results)
