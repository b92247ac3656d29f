"""Multi-track piano rolls in MuseGAN's layout: tracks × bars × steps per bar × pitches.

A cell holds 2 where a note starts, 1 where it is held and 0 where the pitch is silent, so repeated notes of
one pitch stay apart; ``roll > 0`` is the binary roll MuseGAN trains on. Time runs on a grid of
``steps_per_bar / quarters_per_bar`` steps per quarter note (12 by default: 16ths and 8th-note triplets are
exact); bars are fixed ``quarters_per_bar`` quarters long whatever the score's time signature, as in LPD, so a
3/4 piece's measures do not line up with the roll's bars. Tempo is not kept (the roll counts beats).

Onsets and offsets are rounded to the grid, a note lasts at least one step, and within one roll track a pitch
has one voice: a note is cut at the next onset of its pitch, and of equal onsets the longer note is kept.
Notes outside ``lowest_pitch .. lowest_pitch + n_pitches - 1`` are dropped.

Which roll track a score track lands in:
  * ``assign="program"``: drum tracks go to the first drum spec; a pitched track to the first pitched spec whose
    program ranges hold its GM program (tracks no spec takes are dropped; the default ranges cover 0..127).
  * ``assign="order"``: the i-th track with notes goes to spec i (e.g. SATB chorale parts to four tracks).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import symusic

from museforge.tokenizers.base import Tokenizer, TokenizerConfig, as_tuple, one_voice_per_pitch

ONSET, HELD = 2, 1


@dataclass(frozen=True)
class TrackSpec:
    """One roll track: its name, the GM programs (inclusive ranges) it takes, drum flag and output program."""

    name: str
    programs: tuple[tuple[int, int], ...] = ()
    is_drum: bool = False
    program: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "programs", as_tuple(self.programs))
        if any(len(r) != 2 or not 0 <= r[0] <= r[1] <= 127 for r in self.programs):
            raise ValueError(
                f"track {self.name!r}: program ranges must be (low, high) with 0 <= low <= high "
                f"<= 127, got {self.programs}"
            )
        if not 0 <= self.program <= 127:
            raise ValueError(f"track {self.name!r}: output program must be 0..127, got {self.program}")

    def takes(self, program: int) -> bool:
        return any(low <= program <= high for low, high in self.programs)


LPD5_TRACKS: tuple[TrackSpec, ...] = (
    TrackSpec("Drums", (), is_drum=True, program=0),
    TrackSpec("Piano", ((0, 23),), program=0),  # pianos, chromatic percussion, organs
    TrackSpec("Guitar", ((24, 31),), program=25),
    TrackSpec("Bass", ((32, 39),), program=33),
    TrackSpec("Strings", ((40, 127),), program=48),  # strings, ensembles and every other melodic family
)


@dataclass(frozen=True)
class PianoRollConfig(TokenizerConfig):
    """Track layout and grid; the defaults are LPD-5's (MIDI 24..107, 48 steps per 4/4 bar)."""

    tracks: tuple[TrackSpec, ...] = LPD5_TRACKS
    assign: Literal["program", "order"] = "program"
    lowest_pitch: int = 24
    n_pitches: int = 84
    steps_per_bar: int = 48
    quarters_per_bar: int = 4

    def __post_init__(self) -> None:
        specs = tuple(t if isinstance(t, TrackSpec) else TrackSpec(**_track_kwargs(t)) for t in self.tracks)
        object.__setattr__(self, "tracks", specs)
        if not specs:
            raise ValueError("a piano roll needs at least one track spec")
        if self.assign not in ("program", "order"):
            raise ValueError(f"assign must be 'program' or 'order', got {self.assign!r}")
        if self.n_pitches < 1 or self.lowest_pitch < 0 or self.lowest_pitch + self.n_pitches > 128:
            raise ValueError(
                f"pitch window {self.lowest_pitch}..{self.lowest_pitch + self.n_pitches - 1} is not "
                "inside MIDI 0..127"
            )
        if self.steps_per_bar < 1 or self.quarters_per_bar < 1:
            raise ValueError("steps_per_bar and quarters_per_bar must be >= 1")

    @property
    def n_tracks(self) -> int:
        return len(self.tracks)


def _track_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(spec, Mapping):
        raise ValueError(f"a track spec must be a TrackSpec or a dict, got {type(spec).__name__}")
    return dict(spec)


class PianoRollTokenizer(Tokenizer):
    """Scores to uint8 rolls of shape (tracks, bars, steps_per_bar, pitches) and back."""

    name: ClassVar[str] = "pianoroll"
    config_class: ClassVar[type[TokenizerConfig]] = PianoRollConfig
    config: PianoRollConfig

    def steps_per_tick(self, tpq: int) -> float:
        return self.config.steps_per_bar / (self.config.quarters_per_bar * tpq)

    def track_assignment(self, score: symusic.Score) -> list[int | None]:
        """Roll track of each score track (None: dropped)."""
        specs = self.config.tracks
        if self.config.assign == "order":
            with_notes = [i for i, t in enumerate(score.tracks) if len(t.notes)]
            if len(with_notes) > len(specs):
                raise ValueError(
                    f"score has {len(with_notes)} parts with notes but the roll has only "
                    f"{len(specs)} tracks (assign='order')"
                )
            out: list[int | None] = [None] * len(score.tracks)
            for slot, i in enumerate(with_notes):
                out[i] = slot
            return out
        drum = next((k for k, s in enumerate(specs) if s.is_drum), None)
        return [
            drum
            if t.is_drum
            else next((k for k, s in enumerate(specs) if not s.is_drum and s.takes(t.program)), None)
            for t in score.tracks
        ]

    def quantized_notes(self, score: symusic.Score) -> np.ndarray:
        """Notes as rows ``(roll track, onset step, offset step, pitch)`` after every rule in the module docstring."""
        factor = self.steps_per_tick(score.tpq)
        low, high = self.config.lowest_pitch, self.config.lowest_pitch + self.config.n_pitches
        rows = []
        for slot, track in zip(self.track_assignment(score), score.tracks, strict=True):
            if slot is None or len(track.notes) == 0:
                continue
            n = track.notes.numpy()
            on = np.round(n["time"] * factor).astype(np.int64)
            off = np.maximum(on + 1, np.round((n["time"] + n["duration"]) * factor).astype(np.int64))
            pitch = n["pitch"].astype(np.int64)
            inside = (pitch >= low) & (pitch < high)
            rows.append(
                np.stack([np.full(inside.sum(), slot), on[inside], off[inside], pitch[inside]], axis=1)
            )
        if not rows:
            return np.zeros((0, 4), dtype=np.int64)
        notes = np.concatenate(rows)
        order, off = one_voice_per_pitch(notes[:, 1], notes[:, 2], notes[:, 0] * 128 + notes[:, 3])
        notes = notes[order]
        notes[:, 2] = off
        return notes

    def encode(self, score: symusic.Score) -> np.ndarray:
        """The roll (uint8, 2 = onset, 1 = held) of a score; at least one bar long."""
        cfg = self.config
        notes = self.quantized_notes(score)
        n_steps = int(notes[:, 2].max()) if len(notes) else 0
        n_bars = max(1, -(-n_steps // cfg.steps_per_bar))
        total = n_bars * cfg.steps_per_bar
        diff = np.zeros((cfg.n_tracks, total + 1, cfg.n_pitches), dtype=np.int32)
        if len(notes):
            t, on, off, p = notes[:, 0], notes[:, 1], notes[:, 2], notes[:, 3] - cfg.lowest_pitch
            np.add.at(diff, (t, on, p), 1)
            np.add.at(diff, (t, off, p), -1)
        roll = (np.cumsum(diff, axis=1)[:, :total] > 0).astype(np.uint8)
        if len(notes):
            roll[t, on, p] = ONSET
        return roll.reshape(cfg.n_tracks, n_bars, cfg.steps_per_bar, cfg.n_pitches)

    def decode(
        self, roll: np.ndarray, tempo: float = 120.0, tpq: int = 480, velocity: int = 100
    ) -> symusic.Score:
        """A multi-track score (one track per spec, with its program and drum flag) from a roll.

        A roll holding any 2 is read as onset/held; otherwise (a binary or bool roll) every run of non-zero steps
        is one note, so repeated notes of one pitch merge, as they do in MuseGAN's binary rolls.
        """
        cfg = self.config
        arr = np.asarray(roll)
        if arr.dtype.kind not in "biu":
            raise ValueError(
                f"roll must be bool or integer (threshold float rolls first), got dtype {arr.dtype}"
            )
        expected = (cfg.n_tracks, cfg.steps_per_bar, cfg.n_pitches)
        if arr.ndim != 4 or (arr.shape[0], arr.shape[2], arr.shape[3]) != expected:
            raise ValueError(
                f"roll must have shape (tracks={expected[0]}, bars, steps={expected[1]}, "
                f"pitches={expected[2]}), got {arr.shape}"
            )
        if tempo <= 0 or tpq < 1 or not 1 <= velocity <= 127:
            raise ValueError(f"need tempo > 0, tpq >= 1 and velocity 1..127, got {tempo}, {tpq}, {velocity}")
        flat = arr.astype(np.uint8).reshape(cfg.n_tracks, -1, cfg.n_pitches)
        onset_mode = bool((flat == ONSET).any())
        ticks_per_step = cfg.quarters_per_bar * tpq / cfg.steps_per_bar
        score = symusic.Score(tpq)
        score.tempos.append(symusic.Tempo(0, tempo))
        score.time_signatures.append(symusic.TimeSignature(0, cfg.quarters_per_bar, 4))
        for spec, track_roll in zip(cfg.tracks, flat, strict=True):
            track = symusic.Track(name=spec.name, program=spec.program, is_drum=spec.is_drum)
            for p in np.flatnonzero(track_roll.any(axis=0)):
                for start, end in _runs(track_roll[:, p], onset_mode):
                    t0, t1 = round(start * ticks_per_step), round(end * ticks_per_step)
                    track.notes.append(symusic.Note(t0, t1 - t0, int(p) + cfg.lowest_pitch, velocity))
            track.notes.sort()
            score.tracks.append(track)
        return score


def _runs(column: np.ndarray, onset_mode: bool) -> list[tuple[int, int]]:
    """(start, end) steps of the notes in one pitch's column: a note starts at a 2 (or at sound after silence)
    and lasts while the following steps are held (1; any non-zero value in a binary roll)."""
    on = column > 0
    prev = np.append(False, on[:-1])
    starts_mask = (on & ~prev) | (column == ONSET) if onset_mode else on & ~prev
    starts = np.flatnonzero(starts_mask)
    # a step continues the note before it when it is sounding and not a new start
    breaks = np.flatnonzero(~on | starts_mask)
    out = []
    for s in starts:
        nxt = breaks[np.searchsorted(breaks, s, side="right") :][:1]
        out.append((int(s), int(nxt[0]) if len(nxt) else len(column)))
    return out
