"""Small facts about a `symusic.Score` that several layers need: bar lines, note arrays, lengths.

Kept apart from `data/` and `tokenizers/` so both (and `metrics/`) can use them without importing each other.
"""

from __future__ import annotations

import numpy as np
import symusic


def end_tick(score: symusic.Score) -> int:
    """Tick of the last note end (0 for a score with no notes)."""
    ends = [
        int((n["time"] + n["duration"]).max())
        for t in score.tracks
        if len(t.notes)
        for n in [t.notes.numpy()]
    ]
    return max(ends, default=0)


def bar_starts(score: symusic.Score, until: int | None = None) -> np.ndarray:
    """Start tick of every bar up to the last note end (or ``until``), following time-signature changes.

    A score with no time signature is read as 4/4, the MIDI default. A time signature that starts inside a bar
    starts a new bar there (as notation programs do when they write MIDI).
    """
    tpq = score.tpq
    stop = end_tick(score) if until is None else until
    sigs = sorted(
        ((int(ts.time), int(ts.numerator), int(ts.denominator)) for ts in score.time_signatures),
        key=lambda s: s[0],
    )
    if not sigs or sigs[0][0] > 0:
        sigs.insert(0, (0, 4, 4))
    starts: list[int] = []
    for i, (time, num, den) in enumerate(sigs):
        seg_end = sigs[i + 1][0] if i + 1 < len(sigs) else max(stop, time + 1)
        bar_len = max(1, round(tpq * 4 * num / den)) if den > 0 and num > 0 else tpq * 4
        starts.extend(range(time, seg_end, bar_len))
    starts_arr = np.unique(np.asarray(starts, dtype=np.int64))
    if stop > 0:
        starts_arr = starts_arr[starts_arr < stop]
    return starts_arr if len(starts_arr) else np.zeros(1, dtype=np.int64)


NOTE_DTYPE = np.dtype(
    [
        ("time", "i8"),
        ("duration", "i8"),
        ("pitch", "i2"),
        ("velocity", "i2"),
        ("track", "i2"),
        ("is_drum", "?"),
    ]
)


def note_array(score: symusic.Score, drums: bool = True) -> np.ndarray:
    """All notes as one structured array (`NOTE_DTYPE`) sorted by (time, pitch), with the track index added."""
    parts = []
    for index, track in enumerate(score.tracks):
        if (not drums and track.is_drum) or len(track.notes) == 0:
            continue
        notes = track.notes.numpy()
        arr = np.empty(len(notes["time"]), dtype=NOTE_DTYPE)
        arr["time"], arr["duration"], arr["pitch"] = notes["time"], notes["duration"], notes["pitch"]
        arr["velocity"], arr["track"], arr["is_drum"] = notes["velocity"], index, track.is_drum
        parts.append(arr)
    if not parts:
        return np.empty(0, dtype=NOTE_DTYPE)
    out = np.concatenate(parts)
    return out[np.lexsort((out["pitch"], out["time"]))]
