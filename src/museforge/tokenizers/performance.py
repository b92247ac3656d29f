"""Performance RNN events (Oore et al. 2018), written for museforge.

Id layout with the default config (stable; other values of the config shift the blocks the same way):

=========  ===========  =====================================================
ids        event        meaning
=========  ===========  =====================================================
0..127     NOTE_ON      pitch ``id``
128..255   NOTE_OFF     pitch ``id - 128``
256..355   TIME_SHIFT   advance ``(id - 255) * 10`` ms (10 ms .. 1 s)
356..387   VELOCITY     bin ``id - 356``; sets the velocity of later NOTE_ONs
=========  ===========  =====================================================

Encoding reads the score in seconds (honoring every tempo change) and rounds onsets and offsets to the 10 ms
grid; a note shorter than one step lasts one step. All pitched tracks are merged into one performance and drum
tracks are dropped (a piano performance has no drum kit). MIDI has one voice per pitch, and so has this
representation: a note is cut where the next note of the same pitch starts, and of two notes with the same pitch
and onset the longer is kept. At one time step note-offs come before note-ons, and a VELOCITY event is written
only when the velocity bin changes.

Decoding follows Magenta: a NOTE_OFF without a sounding note is ignored, and a note never switched off ends
``max_note_seconds`` (5 s) after its onset. A NOTE_ON of a pitch already sounding ends the earlier note there
(encoding never writes that, so it only matters for generated sequences).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import symusic

from museforge.tokenizers.base import TokenizerConfig, TokenTokenizer, one_voice_per_pitch

N_PITCHES = 128


@dataclass(frozen=True)
class PerformanceConfig(TokenizerConfig):
    """Grid and vocabulary sizes; the defaults are Performance RNN's 388-token vocabulary."""

    steps_per_second: int = 100
    max_shift_steps: int = 100
    num_velocity_bins: int = 32
    max_note_seconds: float = 5.0

    def __post_init__(self) -> None:
        if self.steps_per_second < 1:
            raise ValueError(f"steps_per_second must be >= 1, got {self.steps_per_second}")
        if self.max_shift_steps < 1:
            raise ValueError(f"max_shift_steps must be >= 1, got {self.max_shift_steps}")
        if not 1 <= self.num_velocity_bins <= 127:
            raise ValueError(f"num_velocity_bins must be in 1..127, got {self.num_velocity_bins}")
        if self.max_note_seconds <= 0:
            raise ValueError(f"max_note_seconds must be > 0, got {self.max_note_seconds}")


class PerformanceTokenizer(TokenTokenizer):
    """NOTE_ON / NOTE_OFF / TIME_SHIFT / VELOCITY events on a 10 ms grid (layout in the module docstring)."""

    name: ClassVar[str] = "performance"
    config_class: ClassVar[type[TokenizerConfig]] = PerformanceConfig
    config: PerformanceConfig

    def __init__(self, config: PerformanceConfig | None = None) -> None:
        super().__init__(config)
        self.note_on_offset = 0
        self.note_off_offset = N_PITCHES
        self.time_shift_offset = 2 * N_PITCHES
        self.velocity_offset = self.time_shift_offset + self.config.max_shift_steps

    @property
    def vocab_size(self) -> int:
        return self.velocity_offset + self.config.num_velocity_bins

    # ---- ids --------------------------------------------------------------------------------------------------

    def note_on(self, pitch: int) -> int:
        return self.note_on_offset + self._check_pitch(pitch)

    def note_off(self, pitch: int) -> int:
        return self.note_off_offset + self._check_pitch(pitch)

    def time_shift(self, steps: int) -> int:
        """Id of a shift of ``steps`` grid steps (1 .. max_shift_steps)."""
        if not 1 <= steps <= self.config.max_shift_steps:
            raise ValueError(f"time shift must be 1..{self.config.max_shift_steps} steps, got {steps}")
        return self.time_shift_offset + steps - 1

    def velocity(self, bin_: int) -> int:
        if not 0 <= bin_ < self.config.num_velocity_bins:
            raise ValueError(f"velocity bin must be 0..{self.config.num_velocity_bins - 1}, got {bin_}")
        return self.velocity_offset + bin_

    @staticmethod
    def _check_pitch(pitch: int) -> int:
        if not 0 <= pitch < N_PITCHES:
            raise ValueError(f"pitch must be 0..127, got {pitch}")
        return int(pitch)

    def velocity_bin(self, velocity: int | np.ndarray) -> int | np.ndarray:
        """Bin of MIDI velocities 1..127 (0 is read as 1): equal-width bins, ``(v - 1) * n // 127``."""
        v = np.clip(np.asarray(velocity, dtype=np.int64), 1, 127)
        out = (v - 1) * self.config.num_velocity_bins // 127
        return int(out) if out.ndim == 0 else out

    def bin_velocity(self, bin_: int) -> int:
        """Velocity a bin decodes to: the middle of the bin's velocity range."""
        n = self.config.num_velocity_bins
        low = -(-bin_ * 127 // n) + 1  # smallest v with (v - 1) * n // 127 == bin_
        high = -(-(bin_ + 1) * 127 // n)  # largest such v
        return int((low + high) // 2)

    def event_times(self, ids: np.ndarray) -> np.ndarray:
        """Time in seconds at which each event happens (the sum of the time shifts before it)."""
        arr = np.asarray(ids, dtype=np.int64)  # caches store uint16: do the arithmetic signed
        is_shift = (arr >= self.time_shift_offset) & (arr < self.velocity_offset)
        steps = np.where(is_shift, arr - self.time_shift_offset + 1, 0)
        return (np.cumsum(steps) - steps) / self.config.steps_per_second

    def onset_pitches(self, ids: np.ndarray) -> np.ndarray:
        """The pitch of each NOTE_ON event, -1 for every other event."""
        arr = np.asarray(ids, dtype=np.int64)
        return np.where(arr < self.note_off_offset, arr, -1)

    def transpose_ids(self, ids: np.ndarray, semitones: int) -> np.ndarray | None:
        """``ids`` with NOTE_ON/NOTE_OFF moved by ``semitones``, or None if a pitch would leave 0..127."""
        arr = np.asarray(ids, dtype=np.int64)
        is_note = arr < self.time_shift_offset
        pitch = arr % N_PITCHES
        moved = pitch[is_note] + semitones
        if moved.size and (moved.min() < 0 or moved.max() >= N_PITCHES):
            return None
        out = arr.copy()
        out[is_note] = arr[is_note] + semitones
        return out

    def token_name(self, token_id: int) -> str:
        """Readable name of an id, e.g. ``NOTE_ON_60``, ``TIME_SHIFT_250ms``, ``VELOCITY_20``."""
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise ValueError(f"token id {token_id} outside the vocabulary 0..{self.vocab_size - 1}")
        if token_id < self.note_off_offset:
            return f"NOTE_ON_{token_id}"
        if token_id < self.time_shift_offset:
            return f"NOTE_OFF_{token_id - self.note_off_offset}"
        if token_id < self.velocity_offset:
            ms = (token_id - self.time_shift_offset + 1) * 1000 / self.config.steps_per_second
            return f"TIME_SHIFT_{ms:g}ms"
        return f"VELOCITY_{token_id - self.velocity_offset}"

    # ---- encoding ---------------------------------------------------------------------------------------------

    def quantized_notes(self, score: symusic.Score) -> np.ndarray:
        """Pitched notes as rows ``(onset step, offset step, pitch, velocity)``, sorted, one voice per pitch."""
        seconds = score.to("second")
        rows = []
        for track in seconds.tracks:
            if track.is_drum or len(track.notes) == 0:
                continue
            n = track.notes.numpy()
            rows.append(np.stack([n["time"], n["time"] + n["duration"], n["pitch"], n["velocity"]], axis=1))
        if not rows:
            return np.zeros((0, 4), dtype=np.int64)
        arr = np.concatenate(rows).astype(np.float64)
        sps = self.config.steps_per_second
        on = np.round(arr[:, 0] * sps).astype(np.int64)
        off = np.maximum(on + 1, np.round(arr[:, 1] * sps).astype(np.int64))
        order, off = one_voice_per_pitch(on, off, arr[:, 2].astype(np.int64))
        notes = np.stack(
            [on[order], off, arr[order, 2].astype(np.int64), arr[order, 3].astype(np.int64)], axis=1
        )
        return notes[np.lexsort((notes[:, 2], notes[:, 0]))]

    def encode(self, score: symusic.Score) -> np.ndarray:
        """Event ids (int32) of a score's pitched notes; see the module docstring for the rules."""
        notes = self.quantized_notes(score)
        if len(notes) == 0:
            return np.zeros(0, dtype=np.int32)
        # events as (step, kind, pitch, velocity bin) with kind 0 = off, 1 = on, so offs sort first
        events = np.concatenate(
            [
                np.stack(
                    [
                        notes[:, 1],
                        np.zeros(len(notes), np.int64),
                        notes[:, 2],
                        np.zeros(len(notes), np.int64),
                    ],
                    1,
                ),
                np.stack(
                    [notes[:, 0], np.ones(len(notes), np.int64), notes[:, 2], self.velocity_bin(notes[:, 3])],
                    1,
                ),
            ]
        )
        events = events[np.lexsort((events[:, 2], events[:, 1], events[:, 0]))]
        ids: list[int] = []
        now, current_bin = 0, -1
        max_shift = self.config.max_shift_steps
        for step, kind, pitch, vbin in events.tolist():
            gap = step - now
            while gap > 0:
                shift = min(gap, max_shift)
                ids.append(self.time_shift_offset + shift - 1)
                gap -= shift
            now = step
            if kind == 0:
                ids.append(self.note_off_offset + pitch)
                continue
            if vbin != current_bin:
                ids.append(self.velocity_offset + vbin)
                current_bin = vbin
            ids.append(self.note_on_offset + pitch)
        return np.asarray(ids, dtype=np.int32)

    # ---- decoding ---------------------------------------------------------------------------------------------

    def decode(
        self, ids: np.ndarray | Sequence[int], tpq: int = 480, tempo: float = 120.0, program: int = 0
    ) -> symusic.Score:
        """A one-track score from event ids, with ``tempo`` at tick 0 so that seconds map to ticks exactly."""
        if tpq < 1:
            raise ValueError(f"tpq must be >= 1, got {tpq}")
        if tempo <= 0:
            raise ValueError(f"tempo must be > 0, got {tempo}")
        if not 0 <= program <= 127:
            raise ValueError(f"program must be 0..127, got {program}")
        arr = np.asarray(ids, dtype=np.int64).ravel()
        if len(arr) and (arr.min() < 0 or arr.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in 0..{self.vocab_size - 1}")
        sps = self.config.steps_per_second
        max_steps = round(self.config.max_note_seconds * sps)
        velocity = self.bin_velocity(self.velocity_bin(100))
        now = 0
        open_notes: dict[int, tuple[int, int]] = {}
        notes: list[tuple[int, int, int, int]] = []
        for token in arr.tolist():
            if token < self.note_off_offset:
                if token in open_notes:
                    start, vel = open_notes.pop(token)
                    notes.append((start, now, token, vel))
                open_notes[token] = (now, velocity)
            elif token < self.time_shift_offset:
                pitch = token - self.note_off_offset
                if pitch in open_notes:
                    start, vel = open_notes.pop(pitch)
                    notes.append((start, now, pitch, vel))
            elif token < self.velocity_offset:
                now += token - self.time_shift_offset + 1
            else:
                velocity = self.bin_velocity(token - self.velocity_offset)
        notes.extend((start, start + max_steps, pitch, vel) for pitch, (start, vel) in open_notes.items())
        ticks_per_step = tpq * tempo / 60.0 / sps
        score = symusic.Score(tpq)
        score.tempos.append(symusic.Tempo(0, tempo))
        track = symusic.Track(name="performance", program=program, is_drum=False)
        for start, end, pitch, vel in sorted(notes):
            if end <= start:
                continue
            t0, t1 = round(start * ticks_per_step), round(end * ticks_per_step)
            track.notes.append(symusic.Note(t0, max(1, t1 - t0), pitch, vel))
        score.tracks.append(track)
        return score
