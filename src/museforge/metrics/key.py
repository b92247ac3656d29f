"""The key of a piece: the Krumhansl–Kessler key-finding algorithm (Krumhansl 1990, *Cognitive Foundations of
Musical Pitch*, ch. 4, with Schmuckler's correlation method).

The duration-weighted pitch-class distribution ``d`` (drums left out) is correlated (Pearson's r) with each of
the 24 rotations of the probe-tone profiles below; the key is the rotation and mode of the highest r:

    key = argmax_{tonic in 0..11, mode in {major, minor}}  r(d, rotate(profile_mode, tonic))

Transposing a piece by k semitones rotates ``d`` by k, so its key's tonic moves by exactly k (mod 12).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import symusic

MODES = ("major", "minor")
# How keys are spelled: the tonic of the key signature with the fewest accidentals (F# major and Eb minor have
# six, so either spelling would do; these are the usual ones).
KEY_NAMES = {
    "major": ("C", "Db", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B"),
    "minor": ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "G#", "A", "Bb", "B"),
}
# Krumhansl & Kessler (1982) probe-tone ratings, tonic first.
PROFILES = {
    "major": np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88]),
    "minor": np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17]),
}


@dataclass(frozen=True)
class Key:
    """A tonic (pitch class 0..11, C = 0) and a mode; ``strength`` is the winning correlation (NaN when given)."""

    tonic: int
    mode: str
    strength: float = float("nan")

    def __str__(self) -> str:
        return f"{KEY_NAMES[self.mode][self.tonic]} {self.mode}"


def pitch_class_durations(score: symusic.Score) -> np.ndarray:
    """Total duration (ticks) of the pitched notes of each pitch class, C first."""
    out = np.zeros(12)
    for track in score.tracks:
        if track.is_drum or not track.notes:
            continue
        notes = track.notes.numpy()
        np.add.at(out, notes["pitch"] % 12, notes["duration"].astype(float))
    return out


def estimate_key(score: symusic.Score) -> Key | None:
    """The piece's key by Krumhansl–Kessler (see the module docstring); None without pitched notes or when every
    pitch class sounds equally long (no correlation is defined)."""
    d = pitch_class_durations(score)
    if d.sum() <= 0 or np.all(d == d[0]):
        return None
    best: Key | None = None
    for mode in MODES:
        for tonic in range(12):
            r = float(np.corrcoef(d, np.roll(PROFILES[mode], tonic))[0, 1])
            if best is None or r > best.strength:
                best = Key(tonic, mode, r)
    return best
