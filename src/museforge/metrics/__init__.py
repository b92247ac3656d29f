"""Objective evaluation of symbolic music: per-piece metrics, set comparison, originality and likelihood.

Metrics are pure functions of a `symusic.Score` (MuseGAN's of a piano-roll array) returning NaN when undefined.
"""

from museforge.metrics.compare import compare_feature, compare_sets, kl_divergence, overlap_area
from museforge.metrics.controls import control_fidelity, histogram_fidelity, spearman
from museforge.metrics.core import (
    drum_in_pattern_rate,
    drum_pattern_consistency,
    empty_beat_rate,
    empty_measure_rate,
    groove_consistency,
    n_pitch_classes_used,
    n_pitches_used,
    pitch_class_entropy,
    pitch_entropy,
    pitch_in_scale_rate,
    pitch_range,
    polyphony,
    polyphony_rate,
    scale_consistency,
)
from museforge.metrics.features import piece_features, piece_metrics
from museforge.metrics.likelihood import NGramModel, TokenScorer, evaluate_likelihood, validity_rate
from museforge.metrics.musegan import (
    drum_pattern_rate,
    empty_bar_rate,
    musegan_metrics,
    musegan_table,
    qualified_note_rate,
    tonal_distance,
    used_pitch_classes,
)
from museforge.metrics.originality import OriginalityIndex, OriginalityResult, check_originality, is_near_copy
from museforge.metrics.structure import (
    longest_pitch_run,
    repeated_note_rate,
    self_similarity,
    structure_indicator,
)

__all__ = [
    "NGramModel",
    "OriginalityIndex",
    "OriginalityResult",
    "TokenScorer",
    "check_originality",
    "compare_feature",
    "compare_sets",
    "control_fidelity",
    "drum_in_pattern_rate",
    "drum_pattern_consistency",
    "drum_pattern_rate",
    "empty_bar_rate",
    "empty_beat_rate",
    "empty_measure_rate",
    "evaluate_likelihood",
    "groove_consistency",
    "histogram_fidelity",
    "is_near_copy",
    "kl_divergence",
    "longest_pitch_run",
    "musegan_metrics",
    "musegan_table",
    "n_pitch_classes_used",
    "n_pitches_used",
    "overlap_area",
    "piece_features",
    "piece_metrics",
    "pitch_class_entropy",
    "pitch_entropy",
    "pitch_in_scale_rate",
    "pitch_range",
    "polyphony",
    "polyphony_rate",
    "qualified_note_rate",
    "repeated_note_rate",
    "scale_consistency",
    "self_similarity",
    "spearman",
    "structure_indicator",
    "tonal_distance",
    "used_pitch_classes",
    "validity_rate",
]
