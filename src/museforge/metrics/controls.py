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
    """``{"rho": {attr: ρ(requested, measured)}, "leak": {"a->b": ρ(requested a, measured b)}}``.

    Both mappings hold the same attribute names, each a flat sequence over the same units (bars or pieces).
    """
    missing = set(requested) ^ set(measured)
    if missing:
        raise ValueError(f"requested and measured name different attributes: {sorted(missing)}")
    rho = {name: spearman(requested[name], measured[name]) for name in requested}
    leak = {f"{a}->{b}": spearman(requested[a], measured[b]) for a in requested for b in measured if a != b}
    return {"rho": rho, "leak": leak}


def histogram_fidelity(requested: Sequence[np.ndarray], measured: Sequence[np.ndarray]) -> float:
    """Mean over pieces of ρ between the requested and the measured 12-bin pitch-class histogram."""
    if len(requested) != len(measured):
        raise ValueError(f"{len(requested)} requested histograms for {len(measured)} measured ones")
    values = [spearman(r, m) for r, m in zip(requested, measured, strict=True)]
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan


def measure_bar_classes(
    score: symusic.Score, boundaries: attributes.AttributeBoundaries | None = None
) -> dict[str, np.ndarray]:
    """Measured per-bar classes (rhythm, polyphony) of a score by the tokenizer's definitions; ``boundaries``
    are the model's (its tokenizer config's), MuseMorphose's pop-piano defaults when not given."""
    bounds = boundaries or attributes.AttributeBoundaries()
    rhythm, poly = bounds.classes(*attributes.bar_attributes(score))
    return {"rhythm": np.asarray(rhythm), "polyphony": np.asarray(poly)}


def measure_global_controls(score: symusic.Score) -> dict[str, float | np.ndarray]:
    """Measured piece-level controls: note-density class (Performance RNN bins) and pitch-class histogram."""
    return {
        "density": float(attributes.density_class(attributes.note_density(score))),
        "pitch_class_histogram": attributes.pitch_class_histogram(score),
    }
