"""Musical attributes used as control signals: MuseMorphose's per-bar rhythm/polyphony, Performance RNN's density.

Per-bar attributes (Wu & Yang 2021) are measured on a 16th-note grid: a bar of ``L`` ticks has
``P = round(L / (tpq / 4))`` positions (16 in 4/4, 14 in 7/8, 20 in 5/4). Bar lines come from
`museforge.score.bar_starts`. Drums are excluded. For a non-drum note with onset ``t`` and end ``e`` (ticks),
``on = round(t / g)`` and ``off = max(on + 1, round(e / g))`` with ``g = tpq / 4`` (a note always sounds at its
onset position); positions are counted globally, and bar ``b`` owns positions ``[round(s_b / g), round(s_{b+1} / g))``.

* rhythmic intensity  ``r_b = #{positions of bar b with >= 1 onset} / P_b``
* polyphony           ``p_b = (1 / P_b) * sum over positions j of bar b of #{notes with on <= j < off}``

Each value becomes one of 8 classes: the class is the number of boundaries strictly below the value
(``to_classes``), so a value equal to a boundary falls in the lower class.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Self

import numpy as np
import symusic

from museforge.defaults import DENSITY_BINS, N_ATTRIBUTE_CLASSES
from museforge.io import atomic_write_json
from museforge.score import bar_starts, end_tick, note_array

RHYTHM_BOUNDARIES: tuple[float, ...] = (0.20, 0.25, 0.32, 0.38, 0.44, 0.50, 0.63)
POLYPHONY_BOUNDARIES: tuple[float, ...] = (2.63, 3.06, 3.50, 4.00, 4.63, 5.44, 6.44)


def bar_bounds(score: symusic.Score, until: int | None = None) -> np.ndarray:
    """Bar lines as ``n_bars + 1`` ticks: each bar's start, then the end of the last bar.

    The last bar ends one bar length (of the time signature in force there) after its start.
    """
    starts = bar_starts(score, until)
    last = int(starts[-1])
    num, den = 4, 4
    for ts in sorted(score.time_signatures, key=lambda ts: ts.time):
        if ts.time <= last and ts.numerator > 0 and ts.denominator > 0:
            num, den = int(ts.numerator), int(ts.denominator)
    length = max(1, round(score.tpq * 4 * num / den))
    return np.append(starts, last + length).astype(np.int64)


def bar_attributes(score: symusic.Score, bounds: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rhythmic intensity and polyphony of every bar (formulas in the module docstring), as float64 arrays.

    ``bounds`` (bar lines as `bar_bounds` returns them) lets a caller measure against its own bars, e.g. the bars
    a tokenizer emits; by default they come from `bar_bounds(score)`.
    """
    if bounds is None:
        bounds = bar_bounds(score)
    if score.tpq <= 0:
        raise ValueError(f"score has tpq {score.tpq}; attributes need a positive ticks-per-quarter")
    grid = score.tpq / 4
    edges = np.round(np.asarray(bounds, dtype=np.float64) / grid).astype(np.int64)
    n_bars = len(edges) - 1
    if n_bars < 1:
        raise ValueError("bar_attributes needs at least two bar lines")
    first, last = int(edges[0]), int(edges[-1])
    size = max(last - first, 0)
    onsets = np.zeros(size, dtype=np.int64)
    sounding = np.zeros(size + 1, dtype=np.int64)  # difference array
    notes = note_array(score, drums=False)
    if len(notes):
        on = np.round(notes["time"] / grid).astype(np.int64)
        off = np.maximum(on + 1, np.round((notes["time"] + notes["duration"]) / grid).astype(np.int64))
        inside = (on >= first) & (on < last)
        np.add.at(onsets, on[inside] - first, 1)
        lo = np.clip(on, first, last) - first
        hi = np.clip(off, first, last) - first
        np.add.at(sounding, lo, 1)
        np.add.at(sounding, hi, -1)
    sounding = np.cumsum(sounding)[:size]
    rhythm = np.zeros(n_bars)
    polyphony = np.zeros(n_bars)
    for b in range(n_bars):
        a, z = int(edges[b]) - first, int(edges[b + 1]) - first
        if z <= a:
            continue
        rhythm[b] = np.count_nonzero(onsets[a:z]) / (z - a)
        polyphony[b] = sounding[a:z].sum() / (z - a)
    return rhythm, polyphony


def to_classes(values: np.ndarray | Sequence[float], boundaries: Sequence[float]) -> np.ndarray:
    """Class of each value: the number of boundaries strictly below it (0 .. len(boundaries))."""
    return np.searchsorted(
        np.asarray(boundaries, dtype=np.float64), np.asarray(values, dtype=np.float64), side="left"
    ).astype(np.int64)


def _check_boundaries(name: str, values: Sequence[float]) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if len(out) != N_ATTRIBUTE_CLASSES - 1:
        raise ValueError(
            f"{name} boundaries need {N_ATTRIBUTE_CLASSES - 1} values for "
            f"{N_ATTRIBUTE_CLASSES} classes, got {len(out)}"
        )
    if any(b < a for a, b in itertools.pairwise(out)) or not all(np.isfinite(out)):
        raise ValueError(f"{name} boundaries must be finite and non-decreasing, got {out}")
    return out


@dataclass(frozen=True)
class AttributeBoundaries:
    """Class boundaries for the two per-bar attributes (MuseMorphose's pop-piano values by default).

    MuseMorphose's polyphony boundaries put every monophonic folk tune in class 0; `fit_quantiles` places the
    boundaries at the 1/8 .. 7/8 quantiles of a corpus instead, so each class is about equally used there.
    """

    rhythm: tuple[float, ...] = RHYTHM_BOUNDARIES
    polyphony: tuple[float, ...] = POLYPHONY_BOUNDARIES

    def __post_init__(self) -> None:
        object.__setattr__(self, "rhythm", _check_boundaries("rhythm", self.rhythm))
        object.__setattr__(self, "polyphony", _check_boundaries("polyphony", self.polyphony))

    def classes(self, rhythm: np.ndarray, polyphony: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return to_classes(rhythm, self.rhythm), to_classes(polyphony, self.polyphony)

    def score_classes(self, score: symusic.Score) -> tuple[np.ndarray, np.ndarray]:
        """Per-bar (rhythm class, polyphony class) of a score."""
        return self.classes(*bar_attributes(score))

    @classmethod
    def fit_quantiles(cls, scores_or_values: Iterable[symusic.Score | tuple[np.ndarray, np.ndarray]]) -> Self:
        """Boundaries at the k/8 quantiles (k = 1..7) of the per-bar values over a corpus.

        Items are scores, or ``(rhythm, polyphony)`` arrays as `bar_attributes` returns them (so a build can
        compute values in worker processes and fit once).
        """
        rhythms: list[np.ndarray] = []
        polys: list[np.ndarray] = []
        for item in scores_or_values:
            r, p = bar_attributes(item) if isinstance(item, symusic.Score) else item
            rhythms.append(np.asarray(r, dtype=np.float64))
            polys.append(np.asarray(p, dtype=np.float64))
        if not rhythms or sum(len(r) for r in rhythms) == 0:
            raise ValueError("fit_quantiles needs at least one bar of music")
        qs = np.arange(1, N_ATTRIBUTE_CLASSES) / N_ATTRIBUTE_CLASSES
        return cls(
            tuple(np.quantile(np.concatenate(rhythms), qs)), tuple(np.quantile(np.concatenate(polys), qs))
        )

    def to_dict(self) -> dict[str, list[float]]:
        return {"rhythm": list(self.rhythm), "polyphony": list(self.polyphony)}

    @classmethod
    def from_dict(cls, data: dict[str, Sequence[float]]) -> Self:
        missing = {"rhythm", "polyphony"} - set(data)
        if missing:
            raise ValueError(f"attribute boundaries lack {', '.join(sorted(missing))}")
        return cls(tuple(data["rhythm"]), tuple(data["polyphony"]))

    def save(self, path: str | Path) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def duration_seconds(score: symusic.Score) -> float:
    """Seconds from time 0 to the last note end, honoring tempo changes."""
    if end_tick(score) <= 0:
        return 0.0
    seconds = score.to("second")
    return max(
        float((n["time"] + n["duration"]).max())
        for t in seconds.tracks
        if len(t.notes)
        for n in [t.notes.numpy()]
    )


def note_density(score: symusic.Score) -> float:
    """Notes per second over the whole piece: non-drum notes / seconds to the last note end (0 if empty)."""
    seconds = duration_seconds(score)
    return len(note_array(score, drums=False)) / seconds if seconds > 0 else 0.0


def density_class(density: float | np.ndarray) -> np.ndarray | int:
    """Performance RNN density class 0..7: the number of `DENSITY_BINS` at or below the density (notes/s)."""
    classes = np.searchsorted(np.asarray(DENSITY_BINS, dtype=np.float64), density, side="right")
    return int(classes) if np.ndim(classes) == 0 else classes.astype(np.int64)


def pitch_class_histogram(score: symusic.Score, weight: Literal["count", "duration"] = "count") -> np.ndarray:
    """Normalized 12-bin histogram of pitch classes (C = 0) of non-drum notes; all zeros for no notes.

    ``weight="count"`` counts each note once (as Performance RNN's pitch-class control counts notes);
    ``weight="duration"`` weights each note by its length in ticks, so long notes count more.
    """
    if weight not in ("count", "duration"):
        raise ValueError(f"weight must be 'count' or 'duration', got {weight!r}")
    notes = note_array(score, drums=False)
    hist = np.zeros(12, dtype=np.float64)
    if len(notes):
        w = np.ones(len(notes)) if weight == "count" else notes["duration"].astype(np.float64)
        np.add.at(hist, notes["pitch"] % 12, w)
    total = hist.sum()
    return hist / total if total > 0 else hist
