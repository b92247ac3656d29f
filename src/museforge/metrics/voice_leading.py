"""Voice-leading metrics of multi-part music: parallel fifths and octaves, voice crossing, range per voice.

A *voice* is one non-drum track with notes, in track order, reduced to its top note at each onset (the lines of
`museforge.metrics.structure.melodic_lines`). A chorale part holds one note at a time, so nothing is lost there;
a track that holds chords (a piano, divisi strings) is heard by its top line, and taking it keeps these numbers
on the same lines as `repeated_note_rate` and the MGEval transitions.

A *harmonic moment* is an onset of any voice at which the sounding pitches change. At a moment each voice sounds
the pitch of its latest note if that note still sounds (onset ≤ t < onset + duration), else it rests. MIDI has
no spelling, so intervals are semitones: a fifth is |p − q| mod 12 = 7 (compound fifths count) and unison and
octave share |p − q| mod 12 = 0.
"""

from __future__ import annotations

import math

import numpy as np
import symusic

from museforge.metrics.structure import melodic_lines, repeated_note_rate

REST = -1
PERFECT = (0, 7)  # unison/octave and fifth, mod 12


def _moments(lines: list[np.ndarray]) -> np.ndarray:
    """Pitch per (moment, voice), `REST` where the voice is silent; consecutive equal states are merged."""
    if not lines:
        return np.empty((0, 0), dtype=np.int64)
    times = np.unique(np.concatenate([line["time"] for line in lines]))
    columns = []
    for line in lines:
        last = np.searchsorted(line["time"], times, side="right") - 1
        sounding = (last >= 0) & (line["time"][last] + line["duration"][last] > times)
        columns.append(np.where(sounding, line["pitch"][last].astype(np.int64), REST))
    states = np.stack(columns, axis=1)
    return states[np.r_[True, (states[1:] != states[:-1]).any(axis=1)]]


def harmonic_moments(score: symusic.Score) -> np.ndarray:
    """Sounding pitch of every voice at every harmonic moment: ``(moments, voices)``, -1 where a voice rests."""
    return _moments(melodic_lines(score))


def parallel_fifths_octaves_rate(score: symusic.Score) -> float:
    """Share of two-voice moves that are parallel fifths or octaves.

    Over consecutive harmonic moments m → m+1 and every voice pair (a, b) sounding at both, a *move* is one where
    both voices change pitch (Δa ≠ 0, Δb ≠ 0). It is parallel when sign(Δa) = sign(Δb) and
    |a − b| mod 12 is 7 at both moments, or 0 at both. Rate = parallel moves / moves; NaN with fewer than two
    voices or no move.

    music21's ``VoiceLeadingQuartet.parallelFifth`` / ``parallelUnisonOrOctave`` also count contrary
    ("antiparallel") fifths and octaves; we do not, because the contrary octave of soprano and bass at a
    cadence is standard practice in the chorales this measures. Unlike music21, unison → octave counts: with
    octave equivalence it is the same doubled line.
    """
    states = harmonic_moments(score)
    if states.shape[1] < 2:
        return math.nan
    a, b = np.triu_indices(states.shape[1], k=1)
    before, after = states[:-1], states[1:]
    step_a, step_b = after[:, a] - before[:, a], after[:, b] - before[:, b]
    sounding = (before[:, a] != REST) & (before[:, b] != REST) & (after[:, a] != REST) & (after[:, b] != REST)
    moves = sounding & (step_a != 0) & (step_b != 0)
    interval_before = np.abs(before[:, a] - before[:, b]) % 12
    interval_after = np.abs(after[:, a] - after[:, b]) % 12
    parallel = (
        moves
        & (np.sign(step_a) == np.sign(step_b))
        & (interval_before == interval_after)
        & np.isin(interval_before, PERFECT)
    )
    return float(parallel.sum() / moves.sum()) if moves.any() else math.nan


def voice_crossing_rate(score: symusic.Score) -> float:
    """Share of (harmonic moment, adjacent voice pair) where the lower voice sounds above the upper one.

    Voices are ordered by their mean pitch (ties keep track order); the adjacent pairs are neighbours in that
    order, both sounding at the moment. Rate = #(lower pitch > upper pitch) / #(pairs sounding); a unison is
    not a crossing. NaN with fewer than two voices or no such pair. music21's ``voiceCrossing`` asks the same
    of one pair over two moments; counting per moment weighs a crossing by how long it lasts.
    """
    lines = melodic_lines(score)
    if len(lines) < 2:
        return math.nan
    states = _moments(lines)
    order = np.argsort([line["pitch"].mean() for line in lines], kind="stable")
    lower, upper = states[:, order[:-1]], states[:, order[1:]]
    both = (lower != REST) & (upper != REST)
    return float((both & (lower > upper)).sum() / both.sum()) if both.any() else math.nan


def voice_ranges(score: symusic.Score) -> list[float]:
    """Highest minus lowest pitch of each voice in semitones, in voice order (MusPy's pitch_range per voice)."""
    return [float(line["pitch"].max() - line["pitch"].min()) for line in melodic_lines(score)]


def mean_voice_range(score: symusic.Score) -> float:
    """Mean of `voice_ranges` over the voices; NaN without voices."""
    ranges = voice_ranges(score)
    return float(np.mean(ranges)) if ranges else math.nan


def n_voices(score: symusic.Score) -> float:
    """Number of voices: non-drum tracks with notes."""
    return float(len(melodic_lines(score)))


# ``repeated_note_rate`` is the structure metric of that name: its lines are these voices.
METRICS = {
    "n_voices": n_voices,
    "parallel_fifths_octaves_rate": parallel_fifths_octaves_rate,
    "voice_crossing_rate": voice_crossing_rate,
    "mean_voice_range": mean_voice_range,
    "repeated_note_rate": repeated_note_rate,
}


def voice_leading_metrics(score: symusic.Score) -> dict[str, float]:
    """All voice-leading numbers of one piece (`METRICS`); the pair measures are NaN with fewer than two voices."""
    return {name: float(fn(score)) for name, fn in METRICS.items()}
