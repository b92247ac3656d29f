"""Data augmentation on scores: pitch transposition (MuseMorphose uses ±6 semitones) and tempo stretch.

Both return new scores and leave the input untouched, so a dataset can augment the same cached piece every epoch.
"""

from __future__ import annotations

import numpy as np
import symusic

from museforge.score import note_array


def _pitch_span(score: symusic.Score) -> tuple[int, int] | None:
    notes = note_array(score, drums=False)
    return (int(notes["pitch"].min()), int(notes["pitch"].max())) if len(notes) else None


def allowed_shifts(score: symusic.Score, max_shift: int = 6, low: int = 0, high: int = 127) -> list[int]:
    """Shifts in ``-max_shift .. max_shift`` that keep every pitched note within ``low .. high``."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if not 0 <= low <= high <= 127:
        raise ValueError(f"need 0 <= low <= high <= 127, got low={low}, high={high}")
    span = _pitch_span(score)
    if span is None:
        return list(range(-max_shift, max_shift + 1))
    return [s for s in range(-max_shift, max_shift + 1) if span[0] + s >= low and span[1] + s <= high]


def transpose(score: symusic.Score, semitones: int, low: int = 0, high: int = 127) -> symusic.Score | None:
    """A copy with every pitched note moved by ``semitones``; None if a note would leave ``low .. high``.

    Drum tracks are untouched: their "pitches" name instruments, not notes.
    """
    if not 0 <= low <= high <= 127:
        raise ValueError(f"need 0 <= low <= high <= 127, got low={low}, high={high}")
    span = _pitch_span(score)
    if span is not None and (span[0] + semitones < low or span[1] + semitones > high):
        return None
    out = score.copy()
    for track in out.tracks:
        if not track.is_drum:
            track.shift_pitch(int(semitones), inplace=True)
    return out


def random_transposition(
    score: symusic.Score, rng: np.random.Generator, max_shift: int = 6, low: int = 0, high: int = 127
) -> symusic.Score:
    """A copy transposed by a shift drawn uniformly among `allowed_shifts` (the score itself if none fits)."""
    shifts = allowed_shifts(score, max_shift, low, high)
    if not shifts:
        return score.copy()
    shifted = transpose(score, int(rng.choice(shifts)), low, high)
    assert shifted is not None  # every allowed shift stays in range
    return shifted


def stretch_tempo(score: symusic.Score, factor: float) -> symusic.Score:
    """A copy that plays ``factor`` times as long: every tempo is divided by ``factor``; ticks are unchanged.

    A score without tempo events is read at MIDI's default 120 quarters per minute.
    """
    if not np.isfinite(factor) or factor <= 0:
        raise ValueError(f"tempo stretch factor must be a positive number, got {factor}")
    out = score.copy()
    if len(out.tempos) == 0 or out.tempos[0].time > 0:
        out.tempos.insert(0, symusic.Tempo(0, 120.0))
    for tempo in out.tempos:
        tempo.qpm = tempo.qpm / factor
    return out
