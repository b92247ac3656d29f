"""Output controls every family shares: the key a piece is in, its tempo and each track's instrument.

None of them changes what a model writes: a key is reached by transposing (the models train on windows
transposed at random, so no key is more natural to them than another), a tempo by scaling the tempo map, an
instrument by the track's General MIDI program.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import symusic
from miditok.constants import MIDI_INSTRUMENTS

from museforge.metrics.key import KEY_NAMES, MODES, Key

GM_NAMES: tuple[str, ...] = tuple(i["name"] for i in MIDI_INSTRUMENTS)
_GM_BY_NAME = {name.lower(): program for program, name in enumerate(GM_NAMES)}
_TONICS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_KEY = re.compile(r"\s*([a-g])\s*([#b♯♭]*)\s*(major|minor|maj|min|m)?\s*", re.IGNORECASE)
DEFAULT_QPM = 120.0  # a score without tempo events plays at MIDI's default


@dataclass(frozen=True)
class KeyRequest:
    """A key asked for: a tonic and, optionally, a mode (None: whichever mode the music is in)."""

    tonic: int
    mode: str | None = None

    def __str__(self) -> str:
        if self.mode is None:
            return KEY_NAMES["major"][self.tonic]
        return f"{KEY_NAMES[self.mode][self.tonic]} {self.mode}"

    def accepts(self, key: Key) -> bool:
        return key.tonic == self.tonic and self.mode in (None, key.mode)


def parse_key(text: str) -> KeyRequest:
    """'A minor', 'Am', 'F#', 'Bb major', 'eb min' -> a `KeyRequest`; a `ValueError` naming the accepted forms."""
    match = _KEY.fullmatch(text)
    if match is None:
        raise ValueError(
            f"unknown key {text!r}: use a tonic and an optional mode, like 'A minor', 'Eb' or 'F#m'"
        )
    letter, accidentals, mode = match.groups()
    sharps = sum(a in "#♯" for a in accidentals) - sum(a in "b♭" for a in accidentals)
    tonic = (_TONICS[letter.lower()] + sharps) % 12
    if mode is None:
        return KeyRequest(tonic)
    return KeyRequest(tonic, "minor" if mode.lower() in ("minor", "min", "m") else "major")


def key_choices() -> tuple[tuple[str, str], ...]:
    """Every key a form offers: each tonic in either mode, major, then minor."""
    out: list[tuple[str, str]] = []
    for tonic in range(12):
        either = str(KeyRequest(tonic))
        out.append((either, f"{either} (major or minor)"))
        out.extend((str(KeyRequest(tonic, mode)),) * 2 for mode in MODES)
    return tuple(out)


def gm_program(value: str | int) -> int:
    """A General MIDI program from its number (0..127) or its name (case does not matter)."""
    text = str(value).strip()
    if text.isdigit() and int(text) < len(GM_NAMES):
        return int(text)
    if text.lower() in _GM_BY_NAME:
        return _GM_BY_NAME[text.lower()]
    raise ValueError(
        f"unknown instrument {value!r}: give a General MIDI program 0..127 or its name, e.g. 'Violin' (40) "
        "or 'Acoustic Grand Piano' (0)"
    )


def transposition(found: Key, tonic: int, score: symusic.Score) -> int:
    """Semitones that move ``found``'s tonic to ``tonic``: the smallest move (-6..+5) unless it pushes a note
    out of MIDI's 0..127, then the same move an octave the other way."""
    shift = (tonic - found.tonic + 6) % 12 - 6
    pitched = [t for t in score.tracks if not t.is_drum and t.notes]
    if not pitched:
        return shift
    low = min(int(t.notes.numpy()["pitch"].min()) for t in pitched)
    high = max(int(t.notes.numpy()["pitch"].max()) for t in pitched)
    if low + shift < 0:
        return shift + 12
    if high + shift > 127:
        return shift - 12
    return shift


def transpose(score: symusic.Score, semitones: int) -> symusic.Score:
    """The score with every pitched note moved by ``semitones`` (drum tracks keep their notes)."""
    out = score.copy()
    for track in out.tracks:
        if not track.is_drum:
            track.shift_pitch(semitones, inplace=True)
    return out


def with_tempo(score: symusic.Score, qpm: float) -> symusic.Score:
    """The score at ``qpm`` quarter notes per minute where it starts; later tempo changes keep their ratio to
    the first (a ritardando stays one)."""
    out = score.copy()
    first = float(out.tempos[0].qpm) if len(out.tempos) else DEFAULT_QPM
    scale = qpm / first
    tempos = [symusic.Tempo(t.time, float(t.qpm) * scale) for t in out.tempos] or [symusic.Tempo(0, qpm)]
    out.tempos = symusic.core.TempoTickList(tempos)
    return out


def with_programs(score: symusic.Score, programs: list[int]) -> symusic.Score:
    """The score with its pitched tracks, in order, played by ``programs`` (tracks past the list keep theirs)."""
    out = score.copy()
    pitched = [t for t in out.tracks if not t.is_drum]
    for track, program in zip(pitched, programs, strict=False):
        track.program = program
    return out
