"""Repetition and structure metrics: the seeds' named weaknesses (stuck notes, melodies that never return).

A *line* is one non-drum track reduced to its top voice: at each onset time only the highest note is kept, so
a chord does not read as a run of repeated or leaping notes.
"""

from __future__ import annotations

import math

import numpy as np
import symusic

from museforge.score import bar_starts, note_array


def melodic_lines(score: symusic.Score) -> list[np.ndarray]:
    """Top voice of every non-drum track, as note arrays sorted by time (one note per onset)."""
    notes = note_array(score, drums=False)
    lines = []
    for track in np.unique(notes["track"]):
        line = notes[notes["track"] == track]
        line = line[np.lexsort((-line["pitch"], line["time"]))]
        first = np.r_[True, line["time"][1:] != line["time"][:-1]]
        lines.append(line[first])
    return lines


def repeated_note_rate(score: symusic.Score) -> float:
    """Share of consecutive note pairs within a line that repeat the same pitch; NaN with no pair."""
    pairs = repeats = 0
    for line in melodic_lines(score):
        pitches = line["pitch"]
        pairs += max(len(pitches) - 1, 0)
        repeats += int(np.count_nonzero(pitches[1:] == pitches[:-1]))
    return repeats / pairs if pairs else math.nan


def longest_pitch_run(score: symusic.Score) -> float:
    """Most consecutive notes of one pitch within any line (1 = never repeats); NaN without pitched notes."""
    best = 0
    for line in melodic_lines(score):
        pitches = line["pitch"]
        if not len(pitches):
            continue
        breaks = np.flatnonzero(np.r_[True, pitches[1:] != pitches[:-1], True])
        best = max(best, int(np.diff(breaks).max()))
    return float(best) if best else math.nan


def bar_vectors(score: symusic.Score, positions: int = 16) -> np.ndarray:
    """One vector per bar: onsets counted by (pitch class, position on a ``positions``-step grid of the bar).

    Non-drum notes only; returns ``(bars, 12 * positions)``.
    """
    if positions < 1:
        raise ValueError(f"positions must be at least 1, got {positions}")
    notes = note_array(score, drums=False)
    starts = bar_starts(score)
    bar = np.searchsorted(starts, notes["time"], side="right") - 1
    bar_len = np.diff(np.r_[starts, _last_bar_end(score, starts)])
    offset = (notes["time"] - starts[bar]) / bar_len[bar]
    position = np.minimum((offset * positions).astype(np.int64), positions - 1)
    vectors = np.zeros((len(starts), 12 * positions))
    np.add.at(vectors, (bar, (notes["pitch"] % 12) * positions + position), 1.0)
    return vectors


def _last_bar_end(score: symusic.Score, starts: np.ndarray) -> int:
    """End of the last bar: its start plus the bar length of the meter in force there."""
    last = int(starts[-1])
    sigs = sorted((int(ts.time), int(ts.numerator), int(ts.denominator)) for ts in score.time_signatures)
    num, den = next(((n, d) for t, n, d in reversed(sigs) if t <= last), (4, 4))
    return last + max(1, round(score.tpq * 4 * num / max(den, 1)))


def self_similarity(score: symusic.Score, positions: int = 16) -> np.ndarray:
    """Bar-level self-similarity matrix: cosine similarity of `bar_vectors` (0 for an empty bar)."""
    vectors = bar_vectors(score, positions)
    norms = np.linalg.norm(vectors, axis=1)
    unit = np.divide(vectors, norms[:, None], out=np.zeros_like(vectors), where=norms[:, None] > 0)
    return unit @ unit.T


def structure_indicator(score: symusic.Score, min_lag: int = 2, positions: int = 16) -> float:
    """How much material returns at a distance: mean over non-empty bars i of max_{j ≤ i − min_lag} S[i, j].

    S is `self_similarity`; j ranges over non-empty earlier bars at least ``min_lag`` bars back, so a bar that
    merely continues its neighbour does not count. 1 = every bar restates earlier material, near 0 = nothing
    returns. NaN when no bar has an earlier non-empty bar that far back.
    """
    if min_lag < 1:
        raise ValueError(f"min_lag must be at least 1, got {min_lag}")
    sim = self_similarity(score, positions)
    nonempty = np.flatnonzero(np.diag(sim) > 0)
    best = [
        sim[i, nonempty[nonempty <= i - min_lag]].max() for i in nonempty if (nonempty <= i - min_lag).any()
    ]
    return float(np.mean(best)) if best else math.nan
