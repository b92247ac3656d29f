"""MuseGAN's per-track metrics (Dong et al. 2018, Table 1) on multi-track piano rolls.

A roll is an array ``(tracks, bars, steps_per_bar, pitches)``: nonzero = sounding. Rolls from
`museforge.tokenizers.pianoroll` mark onsets with 2 and sustains with 1, so repeated notes stay apart; a binary
roll (a GAN's output, thresholded) has no onset marks and a note starts wherever a pitch switches on. Time runs
across bar lines (a note may be tied over a bar). Pitch index 0 is MIDI ``lowest_pitch`` (24 in MuseGAN).

Differences from the MuseGAN code, on purpose: DP counts note onsets (MuseGAN counted every sounding cell);
UPC averages over non-empty bars only (an empty bar has no pitch classes to count: EB reports it); TD is the
mean over bars in which both tracks sound.
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np

HARTE_RADII = (1.0, 1.0, 0.5)


def _check_roll(roll: np.ndarray, ndim: int, name: str = "roll") -> np.ndarray:
    arr = np.asarray(roll)
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {arr.shape}")
    return arr


def _notes_per_pitch(track_roll: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Onset mask (bars·steps, pitches) and the length in steps of every note of one track's roll."""
    flat = track_roll.reshape(-1, track_roll.shape[-1])
    active = flat > 0
    previous = np.vstack([np.zeros((1, flat.shape[1]), dtype=bool), active[:-1]])
    onset = active & ~previous
    if flat.max(initial=0) > 1:  # onset-marked roll: 2 starts a note even right after another one
        onset |= flat == 2
    # Walk each pitch's column in time order; a zero row between pitches keeps notes from running across them.
    act_cols = np.vstack([active, np.zeros((1, flat.shape[1]), dtype=bool)]).T.ravel()
    on_cols = np.vstack([onset, np.zeros((1, flat.shape[1]), dtype=bool)]).T.ravel()
    note_id = np.cumsum(on_cols)
    lengths = (
        np.bincount(note_id[act_cols], minlength=int(note_id[-1]) + 1)[1:] if len(note_id) else np.zeros(0)
    )
    return onset.reshape(track_roll.shape), lengths


def empty_bar_rate(track_roll: np.ndarray) -> float:
    """EB: share of bars (0–1) in which the track sounds no note. ``track_roll``: (bars, steps, pitches)."""
    roll = _check_roll(track_roll, 3, "track_roll")
    if roll.shape[0] == 0:
        return math.nan
    return float(1.0 - np.any(roll > 0, axis=(1, 2)).mean())


def used_pitch_classes(track_roll: np.ndarray, lowest_pitch: int = 24) -> float:
    """UPC: mean number of distinct pitch classes per non-empty bar; NaN when every bar is empty."""
    roll = _check_roll(track_roll, 3, "track_roll")
    used = np.any(roll > 0, axis=1)  # (bars, pitches)
    chroma = np.zeros((roll.shape[0], 12), dtype=bool)
    for index in range(roll.shape[2]):
        chroma[:, (index + lowest_pitch) % 12] |= used[:, index]
    counts = chroma.sum(axis=1)
    nonempty = counts > 0
    return float(counts[nonempty].mean()) if nonempty.any() else math.nan


def qualified_note_rate(track_roll: np.ndarray, min_steps: int | None = None) -> float:
    """QN: share of notes lasting at least ``min_steps`` steps; NaN without notes.

    The paper's qualified note is one "no shorter than three time steps (i.e., a 32th note)" at 96 steps per
    bar, so by default ``min_steps`` is a 32nd note at the roll's own resolution, rounded up:
    ``ceil(steps_per_bar / 32)`` (3 at 96 steps per bar, 2 at 48, where a 32nd note is 1.5 steps).
    """
    roll = _check_roll(track_roll, 3, "track_roll")
    steps = qualified_note_steps(roll.shape[1]) if min_steps is None else min_steps
    if steps < 1:
        raise ValueError(f"min_steps must be at least 1, got {steps}")
    _, lengths = _notes_per_pitch(roll)
    return float((lengths >= steps).mean()) if len(lengths) else math.nan


def qualified_note_steps(steps_per_bar: int) -> int:
    """Steps of the shortest qualified note, a 32nd note, at ``steps_per_bar`` (see `qualified_note_rate`)."""
    return max(1, math.ceil(steps_per_bar / 32))


def drum_pattern_rate(track_roll: np.ndarray, tolerance: float = 0.1) -> float:
    """DP: weighted share of drum onsets on the 16th-note grid of a 4/4 bar (8- and 16-beat patterns).

    An onset on the grid weighs 1, one step off it weighs ``tolerance`` (MuseGAN's mask), elsewhere 0. Needs
    steps per bar divisible by 16. NaN without onsets.
    """
    roll = _check_roll(track_roll, 3, "track_roll")
    steps = roll.shape[1]
    if steps % 16:
        raise ValueError(f"drum_pattern_rate needs steps per bar divisible by 16, got {steps}")
    if not 0.0 <= tolerance <= 1.0:
        raise ValueError(f"tolerance must be within [0, 1], got {tolerance}")
    grid = steps // 16
    offset = np.arange(steps) % grid
    mask = np.where(offset == 0, 1.0, 0.0)
    if grid > 1:
        mask[(offset == 1) | (offset == grid - 1)] = tolerance
    onset, _ = _notes_per_pitch(roll)
    per_step = onset.sum(axis=(0, 2))
    total = per_step.sum()
    return float((mask * per_step).sum() / total) if total else math.nan


def tonal_matrix(radii: tuple[float, float, float] = HARTE_RADII) -> np.ndarray:
    """Harte et al.'s 6×12 map from a chroma vector to the tonal centroid (fifths, minor thirds, major thirds)."""
    r1, r2, r3 = radii
    k = np.arange(12)
    return np.array(
        [
            r1 * np.sin(k * 7 * np.pi / 6),
            r1 * np.cos(k * 7 * np.pi / 6),
            r2 * np.sin(k * 3 * np.pi / 2),
            r2 * np.cos(k * 3 * np.pi / 2),
            r3 * np.sin(k * 2 * np.pi / 3),
            r3 * np.cos(k * 2 * np.pi / 3),
        ]
    )


def _bar_chroma(track_roll: np.ndarray, lowest_pitch: int) -> np.ndarray:
    energy = (track_roll > 0).sum(axis=1).astype(float)  # (bars, pitches): sounding steps per pitch
    chroma = np.zeros((track_roll.shape[0], 12))
    for index in range(track_roll.shape[2]):
        chroma[:, (index + lowest_pitch) % 12] += energy[:, index]
    return chroma


def tonal_distance(
    roll_a: np.ndarray,
    roll_b: np.ndarray,
    lowest_pitch: int = 24,
    radii: tuple[float, float, float] = HARTE_RADII,
) -> float:
    """TD: mean over bars of ‖T·c_a − T·c_b‖, c the bar's chroma normalized to sum 1 and T = `tonal_matrix`.

    Only bars where both tracks sound count; NaN when there are none. Smaller = more harmonious pair.
    """
    a, b = _check_roll(roll_a, 3, "roll_a"), _check_roll(roll_b, 3, "roll_b")
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"roll_a and roll_b need the same bars and steps, got {a.shape} and {b.shape}")
    ca, cb = _bar_chroma(a, lowest_pitch), _bar_chroma(b, lowest_pitch)
    both = (ca.sum(1) > 0) & (cb.sum(1) > 0)
    if not both.any():
        return math.nan
    matrix = tonal_matrix(radii)
    ta = (ca[both] / ca[both].sum(1, keepdims=True)) @ matrix.T
    tb = (cb[both] / cb[both].sum(1, keepdims=True)) @ matrix.T
    return float(np.linalg.norm(ta - tb, axis=1).mean())


def musegan_metrics(
    roll: np.ndarray,
    track_names: list[str],
    drum_track: str | None = "drums",
    lowest_pitch: int = 24,
    min_steps: int | None = None,
) -> dict[str, dict[str, float]]:
    """All MuseGAN metrics of one multi-track roll ``(tracks, bars, steps, pitches)``.

    Returns ``{"EB": {track: %}, "UPC": {track: n}, "QN": {track: %}, "DP": {drums: %}, "TD": {"a-b": d}}`` with
    percentages in 0–100 as in the paper; UPC, QN and TD are over pitched tracks, DP over the drum track.
    """
    arr = _check_roll(roll, 4)
    if len(track_names) != arr.shape[0]:
        raise ValueError(f"track_names has {len(track_names)} names for {arr.shape[0]} tracks")
    pitched = [i for i, name in enumerate(track_names) if name != drum_track]
    out: dict[str, dict[str, float]] = {"EB": {}, "UPC": {}, "QN": {}, "DP": {}, "TD": {}}
    for i, name in enumerate(track_names):
        out["EB"][name] = 100.0 * empty_bar_rate(arr[i])
    for i in pitched:
        out["UPC"][track_names[i]] = used_pitch_classes(arr[i], lowest_pitch)
        out["QN"][track_names[i]] = 100.0 * qualified_note_rate(arr[i], min_steps)
    if drum_track in track_names:
        out["DP"][drum_track] = 100.0 * drum_pattern_rate(arr[track_names.index(drum_track)])
    for i, j in combinations(pitched, 2):
        out["TD"][f"{track_names[i]}-{track_names[j]}"] = tonal_distance(arr[i], arr[j], lowest_pitch)
    return out


def musegan_table(
    rolls: list[np.ndarray],
    track_names: list[str],
    drum_track: str | None = "drums",
    lowest_pitch: int = 24,
    min_steps: int | None = None,
) -> dict[str, dict[str, float]]:
    """Paper-style table over a set of rolls: each metric per track, averaged over pieces (NaNs skipped)."""
    return average_metrics(
        [musegan_metrics(r, track_names, drum_track, lowest_pitch, min_steps) for r in rolls]
    )


def average_metrics(per_piece: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Average per-piece `musegan_metrics` into the table, so a caller can keep small dicts, not rolls."""
    table: dict[str, dict[str, float]] = {}
    for metric in ("EB", "UPC", "QN", "DP", "TD"):
        keys = sorted({k for p in per_piece for k in p[metric]})
        table[metric] = {}
        for key in keys:
            values = np.array([p[metric][key] for p in per_piece if key in p[metric]], dtype=float)
            values = values[~np.isnan(values)]
            table[metric][key] = float(values.mean()) if len(values) else math.nan
    return table
