"""MGEval comparison: shared grid, overlap/KL properties, self vs transposed vs shuffled sets of real pieces."""

import numpy as np
import pytest
import symusic

from museforge.metrics.compare import compare_feature, kde_on_grid, kl_divergence, overlap_area, shared_grid
from museforge.metrics.evaluate import analyze_scores, compare_analyses


def test_overlap_and_kl_basics():
    grid = np.linspace(-5, 15, 2001)
    p = kde_on_grid(np.array([0.0, 0.5, 1.0]), grid, 0.5)
    q = kde_on_grid(np.array([10.0, 10.5, 11.0]), grid, 0.5)
    assert np.trapezoid(p, grid) == pytest.approx(1.0)
    assert overlap_area(p, p, grid) == pytest.approx(1.0)
    assert overlap_area(p, q, grid) < 1e-6
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-6)
    assert kl_divergence(p, q) > 10


def test_one_shared_grid_covers_every_sample():
    grid, widths = shared_grid([np.array([0.0, 1.0]), np.array([5.0, 6.0, 9.0])])
    assert grid[0] < 0 and grid[-1] > 9 and len(widths) == 2
    comparison, densities = compare_feature(
        [np.array([v]) for v in (0, 1, 2, 3)], [np.array([v]) for v in (10, 12, 14, 16)]
    )
    for density in (densities.intra_reference, densities.intra_generated, densities.inter):
        assert np.trapezoid(density, densities.grid) == pytest.approx(1.0)
    assert comparison.overlap < 0.2  # reference pieces sit closer to each other than to the generated ones


def shuffled(score: symusic.Score, rng: np.random.Generator) -> symusic.Score:
    """The same notes with pitches and durations shuffled within each track."""
    out = score.copy()
    for track in out.tracks:
        notes = list(track.notes)
        pitches = rng.permutation([n.pitch for n in notes])
        durations = rng.permutation([n.duration for n in notes])
        for n, p, d in zip(notes, pitches, durations, strict=True):
            n.pitch, n.duration = int(p), int(d)
    return out


def test_self_overlap_near_one_transposed_and_shuffled_lower(corpus_scores):
    scores = list(corpus_scores.values())
    rng = np.random.default_rng(0)
    reference = analyze_scores(scores)
    transposed = analyze_scores([s.shift_pitch(6) for s in scores])
    shuffled_set = analyze_scores([shuffled(s, rng) for s in scores])
    same, _ = compare_analyses(reference, reference, musegan=False)
    moved, _ = compare_analyses(transposed, reference, musegan=False)
    mixed, _ = compare_analyses(shuffled_set, reference, musegan=False)
    assert same["overall"]["overlap"] > 0.9
    assert same["overall"]["kl"] < 0.05
    pch = "pitch_class_histogram"
    assert moved["features"][pch]["overlap"] < same["features"][pch]["overlap"] - 0.2
    assert moved["features"]["pitch_range"]["overlap"] == pytest.approx(
        same["features"]["pitch_range"]["overlap"]
    )
    assert (
        mixed["features"]["avg_pitch_interval"]["overlap"]
        < same["features"]["avg_pitch_interval"]["overlap"] - 0.3
    )
    for feature in ("polyphony_rate", "structure_indicator", "pitch_class_transition_matrix"):
        assert mixed["features"][feature]["overlap"] < same["features"][feature]["overlap"] - 0.05, feature
    nltm = "note_length_transition_matrix"
    assert mixed["features"][nltm]["overlap"] < same["features"][nltm]["overlap"]
    assert mixed["features"][pch]["overlap"] == pytest.approx(same["features"][pch]["overlap"])  # same notes
    assert mixed["overall"]["overlap"] < same["overall"]["overlap"]


def test_nan_features_are_left_out_and_tiny_sets_give_nan():
    comparison, densities = compare_feature(
        [np.array([np.nan]), np.array([1.0])], [np.array([1.0]), np.array([2.0])]
    )
    assert np.isnan(comparison.overlap) and densities is None
    assert comparison.n_generated == 1
