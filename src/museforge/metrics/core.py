"""Note-level metrics of one piece, numerically equal to MusPy 0.5 where MusPy defines them.

Every metric takes a `symusic.Score` and returns a float (NaN when undefined). The time unit is the score's tick:
MusPy's ``resolution`` is our ``score.tpq`` and a *beat* is a quarter note, whatever the time signature.
``length`` is MusPy's ``max(track.get_end_time())`` (`piece_length`): the last note end or control change over all
tracks, drums included. ``muspy.read_midi`` keeps a MIDI file's control changes as track annotations, which
``get_end_time`` counts, so a sustain pedal released after the last note (as in most recorded piano) lengthens
the piece; pitch bends, tempos, lyrics and markers do not. A track without notes is dropped when museforge reads
a file, so control changes on such a track are the one place the length can still fall short of MusPy's.
Equality needs the same notes: a note-on that is never switched off is dropped by symusic's reader but held to
the end of its track by MusPy's.

Differences from MusPy 0.5, each on purpose and each covered by a test:
  * A score without pitched notes has no pitch range: NaN (MusPy gives -127 for drums-only music, because it
    starts from highest=0, lowest=127, and 0 for music without notes).
  * A score without tracks gives NaN wherever MusPy raises (``max()`` of an empty sequence in empty_beat_rate,
    empty_measure_rate, polyphony, polyphony_rate, groove_consistency).
  * A non-positive ``measure_resolution`` raises `ValueError` naming the parameter (MusPy divides by zero in
    empty_measure_rate).
  * ``empty_measure_rate`` and ``groove_consistency`` may be called without ``measure_resolution``: the bars then
    follow the score's time signatures (empty_measure_rate) or its single meter (groove_consistency, NaN when the
    meter changes). With an explicit ``measure_resolution`` both are MusPy's fixed grid.

Kept as MusPy has it (to stay comparable with published MusPy numbers): a note marks every beat/measure from the
one holding its start to the one holding its end *inclusive*, so a note ending exactly on a beat line also marks
the next beat; and ``polyphony_rate``'s default threshold 2 counts steps with *three* or more pitches.
"""

from __future__ import annotations

import math

import numpy as np
import symusic

from museforge.score import bar_starts, note_array

MAJOR = np.array([1, 0, 1, 0, 1, 1, 0, 1, 0, 1, 0, 1], dtype=bool)
MINOR = np.array([1, 0, 1, 1, 0, 1, 0, 1, 1, 0, 1, 0], dtype=bool)


def _pitched(score: symusic.Score) -> np.ndarray:
    notes = note_array(score, drums=True)
    return notes[~notes["is_drum"]]


def _drum_notes(score: symusic.Score) -> np.ndarray:
    notes = note_array(score, drums=True)
    return notes[notes["is_drum"]]


def _check_resolution(name: str, value: int) -> None:
    if value < 1:
        raise ValueError(f"{name} must be a positive number of ticks, got {value}")


def piece_length(score: symusic.Score) -> int:
    """Tick of the last note end or control change over all tracks, drums included (0 for neither).

    MusPy's ``max(track.get_end_time() for track in music.tracks)`` on music read by ``muspy.read_midi``, which
    stores control changes as track annotations: the length its beat, measure, polyphony and groove metrics use.
    """
    ends = [0]
    for track in score.tracks:
        if len(track.notes):
            notes = track.notes.numpy()
            ends.append(int((notes["time"] + notes["duration"]).max()))
        if len(track.controls):
            ends.append(int(track.controls.numpy()["time"].max()))
    return max(ends)


def pitch_range(score: symusic.Score) -> float:
    """Highest minus lowest pitch of the non-drum notes; NaN without pitched notes (MusPy: -127 or 0)."""
    pitches = _pitched(score)["pitch"]
    return float(pitches.max() - pitches.min()) if len(pitches) else math.nan


def n_pitches_used(score: symusic.Score) -> float:
    """Number of distinct MIDI pitches among non-drum notes (0 without notes)."""
    return float(len(np.unique(_pitched(score)["pitch"])))


def n_pitch_classes_used(score: symusic.Score) -> float:
    """Number of distinct pitch classes (pitch mod 12) among non-drum notes (0 without notes)."""
    return float(len(np.unique(_pitched(score)["pitch"] % 12)))


def _unit_rate(score: symusic.Score, unit_starts: np.ndarray, length: int) -> float:
    """1 − (units touched by a note) / (units), a note touching units start..end inclusive (MusPy's rule)."""
    notes = note_array(score, drums=True)
    first = np.searchsorted(unit_starts, notes["time"], side="right") - 1
    last = np.searchsorted(unit_starts, notes["time"] + notes["duration"], side="right") - 1
    touched = np.zeros(len(unit_starts) + 1, dtype=np.int64)
    np.add.at(touched, first, 1)
    np.add.at(touched, last + 1, -1)
    n_full = np.count_nonzero(np.cumsum(touched)[:-1] > 0)
    return 1.0 - n_full / len(unit_starts)


def empty_beat_rate(score: symusic.Score) -> float:
    """Share of empty quarter-note beats: 1 − #(beats touched by any note, drums included) / (length // tpq + 1).

    NaN when the length is 0: no notes nor control changes (MusPy raises for a score without tracks).
    """
    length = piece_length(score)
    if length < 1:
        return math.nan
    starts = np.arange(length // score.tpq + 1, dtype=np.int64) * score.tpq
    return _unit_rate(score, starts, length)


def empty_measure_rate(score: symusic.Score, measure_resolution: int | None = None) -> float:
    """Share of empty measures: 1 − #(measures touched by any note, drums included) / #(measures).

    With ``measure_resolution`` (ticks per measure) the measures are MusPy's fixed grid, ``length // res + 1`` of
    them. Without it they are the score's bars (time-signature changes followed), up to and including the bar
    holding ``length``, which is the same count for a constant meter. NaN when the length is 0.
    """
    length = piece_length(score)
    if measure_resolution is not None:
        _check_resolution("measure_resolution", measure_resolution)
    if length < 1:
        return math.nan
    if measure_resolution is None:
        starts = bar_starts(score, until=length + 1)
    else:
        starts = np.arange(length // measure_resolution + 1, dtype=np.int64) * measure_resolution
    return _unit_rate(score, starts, length)


def _active_profile(score: symusic.Score) -> tuple[np.ndarray, np.ndarray]:
    """Change points and number of distinct sounding pitches between them (MusPy's binary piano roll, run-length).

    Same-pitch notes that overlap count once, as in a boolean piano roll; zero-length notes sound nowhere.
    """
    notes = _pitched(score)
    starts, ends, pitches = notes["time"], notes["time"] + notes["duration"], notes["pitch"]
    keep = ends > starts
    starts, ends, pitches = starts[keep], ends[keep], pitches[keep]
    times: list[np.ndarray] = []
    deltas: list[np.ndarray] = []
    for pitch in np.unique(pitches):
        sel = pitches == pitch
        s, e = starts[sel], ends[sel]
        order = np.argsort(s, kind="stable")
        s, e = s[order], np.maximum.accumulate(e[order])
        new = np.r_[
            True, s[1:] > e[:-1]
        ]  # a note starting after every earlier one ended opens a new interval
        group = np.cumsum(new) - 1
        merged_s = s[new]
        merged_e = np.zeros(len(merged_s), dtype=np.int64)
        np.maximum.at(merged_e, group, e)
        times += [merged_s, merged_e]
        deltas += [np.ones(len(merged_s), np.int64), -np.ones(len(merged_e), np.int64)]
    if not times:
        return np.zeros(1, np.int64), np.zeros(0, np.int64)
    t, d = np.concatenate(times), np.concatenate(deltas)
    points, inverse = np.unique(t, return_inverse=True)
    change = np.zeros(len(points), np.int64)
    np.add.at(change, inverse, d)
    return points, np.cumsum(change)[:-1]


def polyphony(score: symusic.Score) -> float:
    """Mean number of sounding pitches over the ticks where at least one sounds: ΣP / #{t: Σ_p P[t, p] > 0}.

    P is the binary piano roll of non-drum notes over ticks. NaN without pitched notes.
    """
    points, active = _active_profile(score)
    widths = np.diff(points)
    sounding = widths[active > 0].sum()
    return float((widths * active).sum() / sounding) if sounding > 0 else math.nan


def polyphony_rate(score: symusic.Score, threshold: int = 2) -> float:
    """Share of ticks with more than ``threshold`` sounding pitches: #{t: Σ_p P[t, p] > threshold} / length.

    ``length`` (`piece_length`) counts drum tracks and control changes too (as in MusPy). NaN when it is 0.
    """
    length = piece_length(score)
    if length < 1:
        return math.nan
    points, active = _active_profile(score)
    return float(np.diff(points)[active > threshold].sum() / length)


def _scale(root: int, mode: str) -> np.ndarray:
    if mode == "major":
        return np.roll(MAJOR, root)
    if mode == "minor":
        return np.roll(MINOR, root)
    raise ValueError(f"mode must be 'major' or 'minor', got {mode!r}")


def pitch_in_scale_rate(score: symusic.Score, root: int, mode: str) -> float:
    """Share of non-drum notes whose pitch class lies in the scale (``root`` 0 = C; major or natural minor).

    NaN without pitched notes.
    """
    scale = _scale(root % 12, mode.lower())
    pitches = _pitched(score)["pitch"]
    return float(scale[pitches % 12].mean()) if len(pitches) else math.nan


def scale_consistency(score: symusic.Score) -> float:
    """Largest pitch-in-scale rate over the 24 major and minor scales; NaN without pitched notes."""
    pitches = _pitched(score)["pitch"]
    if not len(pitches):
        return math.nan
    counts = np.bincount(pitches % 12, minlength=12)
    rates = [counts[_scale(root, mode)].sum() for mode in ("major", "minor") for root in range(12)]
    return float(max(rates) / len(pitches))


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total < 1:
        return math.nan
    prob = counts[counts > 0] / total
    return float(-(prob * np.log2(prob)).sum())


def pitch_entropy(score: symusic.Score) -> float:
    """Shannon entropy (bits) of the non-drum note-count histogram over the 128 pitches: −Σ p log2 p."""
    return _entropy(np.bincount(_pitched(score)["pitch"], minlength=128))


def pitch_class_entropy(score: symusic.Score) -> float:
    """Shannon entropy (bits) of the non-drum note-count histogram over the 12 pitch classes: −Σ p log2 p."""
    return _entropy(np.bincount(_pitched(score)["pitch"] % 12, minlength=12))


def _single_bar_length(score: symusic.Score) -> int | None:
    """Ticks per bar when the whole score is in one meter, else None."""
    sigs = {(int(ts.numerator), int(ts.denominator)) for ts in score.time_signatures}
    if len(sigs) > 1:
        return None
    num, den = sigs.pop() if sigs else (4, 4)
    return max(1, round(score.tpq * 4 * num / den))


def groove_consistency(score: symusic.Score, measure_resolution: int | None = None) -> float:
    """1 − Σ_i Hamming(G_i, G_{i+1}) / (measure_resolution × (T − 1)), G_i the onset vector of measure i.

    Onsets of all notes (drums included) on a tick grid; T = length // measure_resolution + 1. Without
    ``measure_resolution`` the bar length of the score's single meter is used (NaN when the meter changes).
    NaN with fewer than two measures.
    """
    if measure_resolution is None:
        measure_resolution = _single_bar_length(score)
        if measure_resolution is None:
            return math.nan
    _check_resolution("measure_resolution", measure_resolution)
    n_measures = piece_length(score) // measure_resolution + 1
    if n_measures < 2:
        return math.nan
    onsets = np.unique(note_array(score, drums=True)["time"])
    measure, position = np.divmod(onsets, measure_resolution)
    # |G_i xor G_{i+1}| summed over i equals, per onset (m, pos): 2 minus the neighbours holding the same position,
    # corrected at the first and last measure which have one neighbour only.
    keys = set(zip(measure.tolist(), position.tolist(), strict=True))
    distance = 0
    for m, pos in keys:
        for neighbour in (m - 1, m + 1):
            if 0 <= neighbour < n_measures and (neighbour, pos) not in keys:
                distance += 1
    return 1.0 - distance / (measure_resolution * (n_measures - 1))


def _drum_grid(resolution: int, meter: str) -> np.ndarray:
    grid = np.zeros(resolution, dtype=bool)
    grid[0] = True
    if meter == "duple":
        if resolution % 4 == 0:
            grid[:: resolution // 4] = True
        if resolution % 2 == 0:
            grid[:: resolution // 2] = True
    elif meter == "triple":
        if resolution % 3 == 0:
            grid[:: resolution // 3] = True
    else:
        raise ValueError(f"meter must be 'duple' or 'triple', got {meter!r}")
    return grid


def drum_in_pattern_rate(score: symusic.Score, meter: str) -> float:
    """Share of drum notes starting on the meter's grid within the quarter note (time % tpq in the grid).

    Duple grid {0, tpq/4, tpq/2, 3·tpq/4}, triple grid {0, tpq/3, 2·tpq/3} (positions that are whole ticks).
    NaN without drum notes.
    """
    grid = _drum_grid(score.tpq, meter.lower())
    times = _drum_notes(score)["time"]
    return float(grid[times % score.tpq].mean()) if len(times) else math.nan


def drum_pattern_consistency(score: symusic.Score) -> float:
    """Largest drum-in-pattern rate over the duple and triple grids; NaN without drum notes."""
    duple = drum_in_pattern_rate(score, "duple")
    return duple if math.isnan(duple) else max(duple, drum_in_pattern_rate(score, "triple"))
