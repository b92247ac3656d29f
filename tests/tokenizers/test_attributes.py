"""Attributes: hand-computed values on tiny scores, meters, quantile boundaries, density and pitch classes."""

from __future__ import annotations

import numpy as np
import pytest
import symusic

from museforge.tokenizers.attributes import (
    DENSITY_BINS,
    POLYPHONY_BOUNDARIES,
    RHYTHM_BOUNDARIES,
    AttributeBoundaries,
    bar_attributes,
    density_class,
    note_density,
    pitch_class_histogram,
    to_classes,
)


def tiny_score(time_sigs: list[tuple[int, int, int]] = [(0, 4, 4)]) -> symusic.Score:  # noqa: B006
    """tpq 4: one tick per 16th. Bar 1 (4/4): C4 0-4, E4 0-8, G4 8-10; a drum hit at 2. Bar 2: A3 16-32 and four
    quarter notes D5 at 16, 20, 24, 28."""
    score = symusic.Score(4)
    for t, n, d in time_sigs:
        score.time_signatures.append(symusic.TimeSignature(t, n, d))
    piano = symusic.Track(program=0)
    for start, dur, pitch in [(0, 4, 60), (0, 8, 64), (8, 2, 67), (16, 16, 57)] + [
        (16 + 4 * k, 4, 74) for k in range(4)
    ]:
        piano.notes.append(symusic.Note(start, dur, pitch, 80))
    drums = symusic.Track(program=0, is_drum=True)
    drums.notes.append(symusic.Note(2, 1, 36, 100))
    score.tracks.extend([piano, drums])
    return score


def test_hand_computed_bar_attributes() -> None:
    rhythm, poly = bar_attributes(tiny_score())
    # bar 1: onsets at positions 0 and 8 → 2/16; sounding 2,2,2,2,1,1,1,1,1,1,0.. → 14/16
    # bar 2: onsets at 0, 4, 8, 12 → 4/16; two notes at every position → 2
    np.testing.assert_allclose(rhythm, [2 / 16, 4 / 16])
    np.testing.assert_allclose(poly, [14 / 16, 2.0])
    assert to_classes(rhythm, RHYTHM_BOUNDARIES).tolist() == [0, 1]  # 0.25 equals a boundary: lower class
    assert to_classes([2.63, 2.64, 7.0], POLYPHONY_BOUNDARIES).tolist() == [0, 1, 7]


def test_other_meters_have_their_own_positions() -> None:
    # 3/4 bars have 12 positions: bar 1 = ticks 0-12, bar 2 = 12-24, bar 3 = 24-36
    rhythm, poly = bar_attributes(tiny_score([(0, 3, 4)]))
    np.testing.assert_allclose(rhythm, [2 / 12, 2 / 12, 2 / 12])
    # bar 1: 2 notes at 0-3, 1 at 4-9, none at 10-11; bars 2 and 3: A3 for 8 positions + D5 for 8
    np.testing.assert_allclose(poly, [(4 * 2 + 6 * 1) / 12, 16 / 12, 16 / 12])


def test_fixture_odd_meter_positions(scores) -> None:
    rhythm, poly = bar_attributes(scores["odd_meter"])
    # 7/8 bars: 14 positions, an 8th note at every other one; 5/4 bars: 20 positions, a quarter at every 4th
    np.testing.assert_allclose(rhythm, [7 / 14, 7 / 14, 5 / 20, 5 / 20])
    np.testing.assert_allclose(poly, [1.0, 1.0, 1.0, 1.0])


def test_quantile_boundaries_spread_folk_tunes(folk_scores, scores, tmp_path) -> None:
    tunes = [*folk_scores.values(), scores["chorale"], scores["quartet"]]
    default = AttributeBoundaries()
    assert set(np.concatenate([default.score_classes(s)[1] for s in folk_scores.values()]).tolist()) == {0}
    fitted = AttributeBoundaries.fit_quantiles(tunes)
    assert fitted != default
    values = [bar_attributes(s) for s in tunes]
    assert AttributeBoundaries.fit_quantiles(values) == fitted
    poly_classes = np.concatenate([fitted.classes(r, p)[1] for r, p in values])
    assert len(np.unique(poly_classes)) >= 3
    fitted.save(tmp_path / "bounds.json")
    assert AttributeBoundaries.load(tmp_path / "bounds.json") == fitted
    with pytest.raises(ValueError, match="non-decreasing"):
        AttributeBoundaries(rhythm=(0.5, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
    with pytest.raises(ValueError, match="at least one bar"):
        AttributeBoundaries.fit_quantiles([])


def test_note_density_and_class() -> None:
    score = tiny_score()
    score.tempos.append(symusic.Tempo(0, 60.0))  # one quarter per second: 32 ticks = 8 s
    assert note_density(score) == pytest.approx(8 / 8.0)  # 8 pitched notes, the drum hit is excluded
    assert density_class(note_density(score)) == 1
    assert density_class(np.array([0.0, 0.99, 1.0, 63.9, 64.0, 500.0])).tolist() == [0, 0, 1, 6, 7, 7]
    assert len(DENSITY_BINS) == 7
    assert note_density(symusic.Score(480)) == 0.0


def test_pitch_class_histogram() -> None:
    score = tiny_score()
    counts = pitch_class_histogram(score)
    expected = np.zeros(12)
    for pc, k in [(0, 1), (4, 1), (7, 1), (9, 1), (2, 4)]:
        expected[pc] = k
    np.testing.assert_allclose(counts, expected / 8)
    by_duration = pitch_class_histogram(score, weight="duration")
    expected_d = np.zeros(12)
    for pc, d in [(0, 4), (4, 8), (7, 2), (9, 16), (2, 16)]:
        expected_d[pc] = d
    np.testing.assert_allclose(by_duration, expected_d / 46)
    assert not pitch_class_histogram(symusic.Score(480)).any()
    with pytest.raises(ValueError, match="weight"):
        pitch_class_histogram(score, weight="loudness")  # type: ignore[arg-type]
