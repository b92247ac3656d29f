"""Put a piece's own parts back around the music a model made from it.

A REMI model hears every part of a piece merged into one stream and decodes one piano-like track, at its own
resolution and tempo; a Performance RNN hears one stream of events in seconds. Decoded as it is, a continuation
of a four-part chorale would come back as one piano track, the kept bars quantized and merged. These functions
rebuild the result from the source's own tracks (names, programs, drums, exact timing, tempo map) where the
result keeps the source, and the model's notes, as one track of their own, where it played.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import symusic

from museforge.score import end_tick
from museforge.tokenizers.attributes import bar_bounds


def _copy_track(track: symusic.Track, name: str | None = None) -> symusic.Track:
    """An empty track with the name, program and drum flag of ``track``."""
    return symusic.Track(
        name=track.name if name is None else name, program=track.program, is_drum=track.is_drum
    )


def _grid(score: symusic.Score) -> np.ndarray:
    """Bar lines of ``score`` through its last note (at least one bar)."""
    return bar_bounds(score, until=max(end_tick(score), 1))


def keep_source_bars(
    source: symusic.Score,
    made: symusic.Score,
    kept: Collection[int],
    label: str,
    voices: Mapping[int, int] | None = None,
) -> symusic.Score:
    """``made`` (a model's decoded output, its bar ``b`` standing for the source's bar ``b``) with the bars in
    ``kept`` (0-based) taken from ``source``'s own tracks and the others from ``made``, as a track named
    ``label``; a multi-track model's voice (``voices``: {made's program: source track index}) goes on in its
    source track instead. Bars past the source's end follow ``made``'s bar lengths. The source's tempo map and key
    signatures hold throughout; its time signatures up to its end, then ``made``'s."""
    src_lines = _grid(source)
    made_lines = _grid(made)
    ratio = source.tpq / made.tpq
    out_lines = [int(t) for t in src_lines]
    for b in range(len(out_lines), len(made_lines)):  # bars past the source: made's lengths, in source ticks
        out_lines.append(out_lines[-1] + round((made_lines[b] - made_lines[b - 1]) * ratio))
    out_lines.append(out_lines[-1] + round(source.tpq * 4))  # a last line past everything, for the lookup
    kept = set(kept)

    out = symusic.Score(source.tpq)
    out.tempos = source.tempos.copy()
    out.key_signatures = source.key_signatures.copy()
    out.time_signatures = source.time_signatures.copy()
    source_end = int(src_lines[-1])
    for ts in made.time_signatures:
        b = int(np.searchsorted(made_lines, ts.time, side="right")) - 1
        at = out_lines[b] + round((ts.time - made_lines[b]) * ratio)
        if at >= source_end:
            out.time_signatures.append(symusic.TimeSignature(at, ts.numerator, ts.denominator))
    copies = []
    for track in source.tracks:
        copy = _copy_track(track)
        for note in track.notes:
            if int(np.searchsorted(src_lines, note.time, side="right")) - 1 in kept:
                copy.notes.append(note.copy())
        copies.append(copy)
    voices = voices or {}
    added = []
    for i, track in enumerate(made.tracks):
        own = None if track.is_drum else voices.get(track.program)
        name = label if len(made.tracks) == 1 else f"{label} {i + 1}"
        copy = copies[own] if own is not None else _copy_track(track, name)
        for note in track.notes:
            b = int(np.searchsorted(made_lines, note.time, side="right")) - 1
            if b in kept:
                continue
            start = out_lines[b] + round((note.time - made_lines[b]) * ratio)
            copy.notes.append(
                symusic.Note(start, max(1, round(note.duration * ratio)), note.pitch, note.velocity)
            )
        if own is None:
            added.append(copy)
        else:
            copy.notes.sort()  # the source's notes, then the voice's
    for copy in [*copies, *added]:
        if len(copy.notes):
            out.tracks.append(copy)
    return out


def keep_source_seconds(
    source: symusic.Score, made: symusic.Score, cut_seconds: float, label: str
) -> symusic.Score:
    """``made`` (a one-tempo score whose time 0 is the source's, e.g. a Performance RNN's decoded output) with
    everything before ``cut_seconds`` taken from ``source``'s own tracks and the notes from there on from
    ``made``, as a track named ``label``; in ``made``'s ticks and tempo."""
    if len(made.tempos) > 1:
        raise ValueError("keep_source_seconds needs a made score with one tempo")
    qpm = made.tempos[0].qpm if len(made.tempos) else 120.0
    ticks_per_second = made.tpq * qpm / 60.0
    out = symusic.Score(made.tpq)
    out.tempos = made.tempos.copy()
    for track in source.to("second").tracks:
        copy = _copy_track(track)
        for note in track.notes:
            start = round(note.time * ticks_per_second)
            copy.notes.append(
                symusic.Note(
                    start, max(1, round(note.duration * ticks_per_second)), note.pitch, note.velocity
                )
            )
        if len(copy.notes):
            out.tracks.append(copy)
    cut = round(cut_seconds * ticks_per_second)
    for i, track in enumerate(made.tracks):
        copy = _copy_track(track, label if len(made.tracks) == 1 else f"{label} {i + 1}")
        copy.notes.extend(n.copy() for n in track.notes if n.time >= cut)
        if len(copy.notes):
            out.tracks.append(copy)
    return out


__all__ = ["keep_source_bars", "keep_source_seconds"]


def replace_track_bars(
    source: symusic.Score, index: int, made: symusic.Score, first: int, last: int
) -> symusic.Score:
    """``source`` with track ``index``'s notes in bars ``first..last`` (0-based, inclusive) replaced by every
    note of ``made`` (a model's decoded voice, its bar 0 standing for the source's bar ``first``), placed at the
    same offset in the source's bar; every other note, track, tempo and meter is the source's own, untouched."""
    lines = [int(t) for t in _grid(source)]
    lines.append(lines[-1] + round(source.tpq * 4))  # a line past the end, for notes in the last bar
    made_lines = _grid(made)
    ratio = source.tpq / made.tpq
    out = source.copy()
    track = out.tracks[index]
    kept = [
        n for n in track.notes if not first <= int(np.searchsorted(lines, n.time, side="right")) - 1 <= last
    ]
    track.notes.clear()
    track.notes.extend(kept)
    for voice in made.tracks:
        for note in voice.notes:
            b = first + int(np.searchsorted(made_lines, note.time, side="right")) - 1
            if b > last or b + 1 >= len(lines):
                continue
            start = lines[b] + round((note.time - made_lines[b - first]) * ratio)
            track.notes.append(
                symusic.Note(start, max(1, round(note.duration * ratio)), note.pitch, note.velocity)
            )
    track.notes.sort()
    return out
