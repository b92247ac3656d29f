"""Per-piece features for set comparison (MGEval, Yang & Lerch 2018) and the full per-piece metric set.

Vector features are normalized histograms / transition matrices; time is measured in quarter notes (MGEval used
seconds, which mixes tempo into rhythm). Transitions are taken within each melodic line (a track's top voice).
"""

from __future__ import annotations

import math

import numpy as np
import symusic

from museforge.metrics import core, structure
from museforge.score import bar_starts, note_array

# MGEval's 12 note-length classes, in quarter notes: whole, half, quarter, 8th, 16th, their dotted forms, and
# half-, quarter- and 8th-note triplets.
NOTE_LENGTH_CLASSES = np.array([4, 2, 1, 1 / 2, 1 / 4, 3, 3 / 2, 3 / 4, 3 / 8, 4 / 3, 2 / 3, 1 / 3])


def _normalized(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.full(counts.shape, np.nan)


def note_length_classes(durations: np.ndarray, tpq: int) -> np.ndarray:
    """Index of the nearest of the 12 `NOTE_LENGTH_CLASSES` for each duration in ticks."""
    quarters = np.asarray(durations, dtype=float) / tpq
    return np.abs(quarters[:, None] - NOTE_LENGTH_CLASSES[None, :]).argmin(axis=1)


def _transition_matrix(pairs: list[tuple[np.ndarray, np.ndarray]], size: int) -> np.ndarray:
    matrix = np.zeros((size, size))
    for src, dst in pairs:
        np.add.at(matrix, (src, dst), 1.0)
    return _normalized(matrix).ravel()


def piece_features(score: symusic.Score) -> dict[str, np.ndarray]:
    """MGEval's features of one piece (non-drum notes), each a float vector; NaN-filled when undefined."""
    notes = note_array(score, drums=False)
    tpq = score.tpq
    starts = bar_starts(score)
    bar = np.searchsorted(starts, notes["time"], side="right") - 1
    lines = structure.melodic_lines(score)
    pitch_pairs = [(line["pitch"][:-1] % 12, line["pitch"][1:] % 12) for line in lines if len(line) > 1]
    length_pairs = []
    for line in lines:
        if len(line) > 1:
            classes = note_length_classes(line["duration"], tpq)
            length_pairs.append((classes[:-1], classes[1:]))
    intervals = np.concatenate(
        [np.abs(np.diff(line["pitch"].astype(float))) for line in lines] or [np.zeros(0)]
    )
    onsets = np.unique(notes["time"])
    n_bars = len(starts)
    bar_pitches = [len(np.unique(notes["pitch"][bar == b])) for b in range(n_bars)]
    scalar = {
        "total_used_pitch": float(len(np.unique(notes["pitch"]))) if len(notes) else math.nan,
        "bar_used_pitch": float(np.mean(bar_pitches)) if len(notes) else math.nan,
        "total_used_note": float(len(notes)) if len(notes) else math.nan,
        "bar_used_note": len(notes) / n_bars if len(notes) else math.nan,
        "pitch_range": core.pitch_range(score),
        "avg_pitch_interval": float(intervals.mean()) if len(intervals) else math.nan,
        "avg_ioi": float(np.diff(onsets).mean() / tpq) if len(onsets) > 1 else math.nan,
    }
    features = {name: np.array([value]) for name, value in scalar.items()}
    features["pitch_class_histogram"] = _normalized(
        np.bincount(notes["pitch"] % 12, minlength=12).astype(float)
    )
    features["pitch_class_transition_matrix"] = _transition_matrix(pitch_pairs, 12)
    lengths = note_length_classes(notes["duration"], tpq) if len(notes) else np.zeros(0, dtype=np.int64)
    features["note_length_histogram"] = _normalized(np.bincount(lengths, minlength=12).astype(float))
    features["note_length_transition_matrix"] = _transition_matrix(length_pairs, 12)
    return features


METRICS = {
    "pitch_range": core.pitch_range,
    "n_pitches_used": core.n_pitches_used,
    "n_pitch_classes_used": core.n_pitch_classes_used,
    "polyphony": core.polyphony,
    "polyphony_rate": core.polyphony_rate,
    "scale_consistency": core.scale_consistency,
    "pitch_entropy": core.pitch_entropy,
    "pitch_class_entropy": core.pitch_class_entropy,
    "empty_beat_rate": core.empty_beat_rate,
    "empty_measure_rate": core.empty_measure_rate,
    "groove_consistency": core.groove_consistency,
    "drum_pattern_consistency": core.drum_pattern_consistency,
    "repeated_note_rate": structure.repeated_note_rate,
    "longest_pitch_run": structure.longest_pitch_run,
    "structure_indicator": structure.structure_indicator,
}


def piece_metrics(score: symusic.Score) -> dict[str, float]:
    """Every scalar metric of one piece with its default parameters (NaN where undefined)."""
    return {name: float(fn(score)) for name, fn in METRICS.items()}
