"""Control fidelity: does generated music have the attributes that were asked for? (MuseMorphose's measure.)

For each attribute, Spearman's ρ between the requested and the measured values (per bar for rhythmic intensity
and polyphony class, per piece for note density), and the *leak*: ρ between the requested value of one attribute
and the measured value of another, which should stay near 0 when only one attribute was varied. Pitch-class
histograms are compared per piece by ρ over their 12 bins.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import symusic

from museforge.tokenizers import attributes


def spearman(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Spearman's ρ of two equally long sequences; NaN when either is constant or shorter than 2."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"requested and measured values differ in length: {x.shape} vs {y.shape}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    from scipy.stats import spearmanr  # here: scipy.stats takes 0.5 s to import, and only this needs it

    return float(spearmanr(x, y).statistic)


def control_fidelity(
    requested: Mapping[str, Sequence[float] | np.ndarray],
    measured: Mapping[str, Sequence[float] | np.ndarray],
) -> dict[str, dict[str, float]]:
    """``{"rho": {attr: ρ(requested, measured)}, "leak": {"a->b": ρ(requested a, measured b)}, "leak_inherent":
    {"a->b": ρ(requested a, requested b)}, "leak_excess": {"a->b": leak - inherent}}``.

    Both mappings hold the same attribute names, each a flat sequence over the same units (bars or pieces).
    Where the requested values of two attributes are correlated themselves, a model that plays exactly what was
    asked still shows that correlation as leak: ``leak_inherent`` is it, ``leak_excess`` what the model adds.
    """
    missing = set(requested) ^ set(measured)
    if missing:
        raise ValueError(f"requested and measured name different attributes: {sorted(missing)}")
    rho = {name: spearman(requested[name], measured[name]) for name in requested}
    pairs = [(a, b) for a in requested for b in measured if a != b]
    leak = {f"{a}->{b}": spearman(requested[a], measured[b]) for a, b in pairs}
    inherent = {f"{a}->{b}": spearman(requested[a], requested[b]) for a, b in pairs}
    excess = {key: leak[key] - inherent[key] for key in leak}
    return {"rho": rho, "leak": leak, "leak_inherent": inherent, "leak_excess": excess}


def histogram_fidelity(requested: Sequence[np.ndarray], measured: Sequence[np.ndarray]) -> float:
    """Mean over pieces of ρ between the requested and the measured 12-bin pitch-class histogram."""
    if len(requested) != len(measured):
        raise ValueError(f"{len(requested)} requested histograms for {len(measured)} measured ones")
    values = [spearman(r, m) for r, m in zip(requested, measured, strict=True)]
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def measure_bar_classes(
    score: symusic.Score, boundaries: attributes.AttributeBoundaries | None = None, bars: int | None = None
) -> dict[str, np.ndarray]:
    """Measured per-bar classes (rhythm, polyphony) of a score by the tokenizer's definitions; ``boundaries``
    are the model's (its tokenizer config's), MuseMorphose's pop-piano defaults when not given.

    With ``bars``, exactly that many per attribute, to set beside the ``bars`` classes that were asked for:
    bars past the music (silent) are class 0 and bars beyond ``bars`` are left out."""
    bounds = boundaries or attributes.AttributeBoundaries()
    rhythm, poly = bounds.classes(*attributes.bar_attributes(score))
    found = {"rhythm": np.asarray(rhythm, dtype=np.int64), "polyphony": np.asarray(poly, dtype=np.int64)}
    if bars is None:
        return found
    padded = {name: np.zeros(bars, dtype=np.int64) for name in found}
    for name, values in found.items():
        padded[name][: min(bars, len(values))] = values[:bars]
    return padded


def measure_global_controls(score: symusic.Score) -> dict[str, float | np.ndarray]:
    """Measured piece-level controls: note-density class (Performance RNN bins) and pitch-class histogram."""
    return {
        "density": float(attributes.density_class(attributes.note_density(score))),
        "pitch_class_histogram": attributes.pitch_class_histogram(score),
    }
