"""Control fidelity of music generated from scratch: ask a model for attributes, measure what it played.

A REMI Transformer or a MuseMorphose is given a per-bar plan of (rhythm, polyphony) classes drawn at random,
each bar and attribute independently; a Performance RNN a note-density class and a pitch-class set (a random
major or natural-minor scale) per piece. Spearman ρ between requested and measured values, and the leak onto
the other attribute, are `museforge.metrics.controls`' measures, the ones `evaluate_transfer` reports for
MuseMorphose's style transfer; classes are measured with the model's own tokenizer boundaries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from museforge.families.loaded import LoadedModel
from museforge.families.performance.model import N_DENSITY_CLASSES, PerformanceRNN
from museforge.families.serving import generate_song
from museforge.metrics.controls import (
    control_fidelity,
    histogram_fidelity,
    measure_bar_classes,
    measure_global_controls,
    spearman,
)
from museforge.metrics.core import MAJOR, MINOR
from museforge.tokenizers.attributes import N_ATTRIBUTE_CLASSES
from museforge.tokenizers.remi import RemiTokenizer

BAR_ATTRIBUTES = ("rhythm", "polyphony")
CONTROL_BARS = 8  # one MuseMorphose window of the shipped model
CONTROL_SECONDS = 10.0  # a Performance RNN piece: three density windows and more

Progress = Callable[[int, int], None]


def has_controls(loaded: LoadedModel) -> bool:
    """Whether the model can be asked for attributes: per-bar classes (REMI tokens) or Performance RNN controls."""
    model = loaded.checkpoint.model
    if isinstance(model, PerformanceRNN):
        return bool(model.config.use_controls)
    return isinstance(loaded.tokenizer, RemiTokenizer)  # every REMI vocabulary holds the per-bar classes


def generation_control(
    loaded: LoadedModel,
    *,
    pieces: int = 8,
    bars: int = CONTROL_BARS,
    seconds: float = CONTROL_SECONDS,
    seed: int = 0,
    style: str | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Generate ``pieces`` pieces with random requested controls (seeds ``seed + i``) and measure them.

    Per-bar models (``bars`` each): ``{"unit": "bar", "rho": {attr}, "leak": {attr}, "leak_inherent": {attr},
    "leak_excess": {attr}, "requested": {attr: [[class per bar] per piece]}, "measured": ...}``, the leak of an
    attribute being onto the other one. A Performance RNN (``seconds`` each): ``{"unit": "piece", "rho":
    {"density", "pitch_class_histogram"}, ...}``, the histogram's ρ being the mean over pieces of ρ between the
    requested scale and the measured 12-bin histogram. Both carry ``model``, ``family``, ``pieces``, ``seed``.
    """
    if pieces < 1:
        raise ValueError(f"pieces must be >= 1, got {pieces}")
    if not has_controls(loaded):
        raise ValueError(f"model {loaded.name} ({loaded.family}) takes no attribute controls to measure")
    head = {"model": loaded.name, "family": loaded.family, "pieces": pieces, "seed": seed}
    if isinstance(loaded.checkpoint.model, PerformanceRNN):
        return head | _piece_controls(loaded, pieces, seconds, seed, progress)
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    return head | {"style": style} | _bar_controls(loaded, pieces, bars, seed, style, progress)


def _bar_controls(
    loaded: LoadedModel, pieces: int, bars: int, seed: int, style: str | None, progress: Progress | None
) -> dict[str, Any]:
    """Random per-bar classes asked of a REMI-token model, and the classes its music has."""
    tok = loaded.tokenizer
    assert isinstance(tok, RemiTokenizer)
    rng = np.random.default_rng(seed)
    requested: dict[str, list[np.ndarray]] = {a: [] for a in BAR_ATTRIBUTES}
    measured: dict[str, list[np.ndarray]] = {a: [] for a in BAR_ATTRIBUTES}
    for i in range(pieces):
        asked = {a: rng.integers(0, N_ATTRIBUTE_CLASSES, bars) for a in BAR_ATTRIBUTES}
        rhythm, polyphony = asked["rhythm"].tolist(), asked["polyphony"].tolist()
        song = generate_song(
            loaded, bars=bars, style=style, rhythm=rhythm, polyphony=polyphony, seed=seed + i
        )[0]
        found = measure_bar_classes(song.score, tok.config.boundaries, bars)
        for a in BAR_ATTRIBUTES:
            requested[a].append(asked[a])
            measured[a].append(found[a])
        if progress is not None:
            progress(i + 1, pieces)
    got = control_fidelity(
        {a: np.concatenate(requested[a]) for a in BAR_ATTRIBUTES},
        {a: np.concatenate(measured[a]) for a in BAR_ATTRIBUTES},
    )
    onto = {a: f"{a}->{next(b for b in BAR_ATTRIBUTES if b != a)}" for a in BAR_ATTRIBUTES}
    return {
        "unit": "bar",
        "bars": bars,
        "rho": got["rho"],
        **{
            key: {a: got[key][onto[a]] for a in BAR_ATTRIBUTES}
            for key in ("leak", "leak_inherent", "leak_excess")
        },
        "requested": {a: [v.tolist() for v in requested[a]] for a in BAR_ATTRIBUTES},
        "measured": {a: [v.tolist() for v in measured[a]] for a in BAR_ATTRIBUTES},
    }


def _random_scale(rng: np.random.Generator) -> np.ndarray:
    """The 12 pitch-class weights of a random major or natural-minor scale (1 in the scale, 0 outside)."""
    mode = MAJOR if rng.integers(2) == 0 else MINOR
    return np.roll(mode, int(rng.integers(12))).astype(np.float64)


def _piece_controls(
    loaded: LoadedModel, pieces: int, seconds: float, seed: int, progress: Progress | None
) -> dict[str, Any]:
    """Random density classes and scales asked of a Performance RNN, and what its music has."""
    rng = np.random.default_rng(seed)
    densities, found_densities, scales, histograms = [], [], [], []
    for i in range(pieces):
        density, scale = int(rng.integers(N_DENSITY_CLASSES)), _random_scale(rng)
        song = generate_song(
            loaded,
            seconds=seconds,
            density=density,
            pitch_classes=np.flatnonzero(scale).tolist(),
            seed=seed + i,
        )[0]
        found = measure_global_controls(song.score)
        densities.append(density)
        found_densities.append(int(found["density"]))
        scales.append(scale)
        histograms.append(found["pitch_class_histogram"])
        if progress is not None:
            progress(i + 1, pieces)
    return {
        "unit": "piece",
        "seconds": seconds,
        "rho": {
            "density": spearman(densities, found_densities),
            "pitch_class_histogram": histogram_fidelity(scales, histograms),
        },
        "requested": {"density": densities, "pitch_classes": [np.flatnonzero(s).tolist() for s in scales]},
        "measured": {"density": found_densities},
    }
