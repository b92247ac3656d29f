"""Fidelity of a re-generated piece to its input, bar by bar (MuseMorphose's style-transfer measures).

A transfer should change the requested attributes and keep the piece's identity. Identity is measured per bar
between the input and the output, over the bars both have:

* chroma similarity: cosine of the 12-bin pitch-class vectors, each note weighted by the 16th-note grid
  positions it sounds in the bar (harmony and melody kept);
* groove similarity: ``1 − Hamming(onsets_a, onsets_b) / P`` of the binary onset vectors on the bar's ``P``
  16th-note positions (the rhythm pattern kept; Dixon et al.'s grooving-pattern similarity).

Bars are those of each score (`museforge.tokenizers.attributes.bar_bounds`), drums excluded, on the same grid as
the per-bar attributes. Both measures are model-agnostic: they take two scores.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import symusic

from museforge.score import note_array
from museforge.tokenizers.attributes import bar_bounds


def bar_profiles(score: symusic.Score) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per bar: a 12-bin chroma vector (sounding positions per pitch class) and a binary onset vector [P]."""
    if score.tpq <= 0:
        raise ValueError(f"score has tpq {score.tpq}; bar profiles need a positive ticks-per-quarter")
    grid = score.tpq / 4
    edges = np.round(bar_bounds(score) / grid).astype(np.int64)
    notes = note_array(score, drums=False)
    on = np.round(notes["time"] / grid).astype(np.int64)
    off = np.maximum(on + 1, np.round((notes["time"] + notes["duration"]) / grid).astype(np.int64))
    pcs = notes["pitch"].astype(np.int64) % 12
    chroma, onsets = [], []
    for a, z in itertools.pairwise(edges.tolist()):
        size = max(int(z - a), 1)
        overlap = np.clip(np.minimum(off, z) - np.maximum(on, a), 0, None)
        chroma.append(np.bincount(pcs, weights=overlap, minlength=12).astype(np.float64))
        vec = np.zeros(size, dtype=bool)
        inside = (on >= a) & (on < z)
        vec[on[inside] - a] = True
        onsets.append(vec)
    return chroma, onsets


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0  # two silent bars are alike
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def bar_similarity(original: symusic.Score, transformed: symusic.Score) -> dict[str, np.ndarray]:
    """``{"chroma": [M], "groove": [M]}`` similarities (0..1) of the first ``M`` bars both scores have."""
    chroma_a, onset_a = bar_profiles(original)
    chroma_b, onset_b = bar_profiles(transformed)
    m = min(len(chroma_a), len(chroma_b))
    chroma = np.array([_cosine(chroma_a[i], chroma_b[i]) for i in range(m)])
    groove = []
    for i in range(m):
        a, b = onset_a[i], onset_b[i]
        p = max(len(a), len(b))
        a, b = np.pad(a, (0, p - len(a))), np.pad(b, (0, p - len(b)))
        groove.append(1.0 - np.count_nonzero(a != b) / p)
    return {"chroma": chroma, "groove": np.asarray(groove, dtype=np.float64)}


def mean_similarity(pairs: list[tuple[symusic.Score, symusic.Score]]) -> dict[str, float]:
    """Mean chroma and groove similarity over all bars of ``(original, transformed)`` pairs (NaN if none)."""
    chroma: list[np.ndarray] = []
    groove: list[np.ndarray] = []
    for a, b in pairs:
        sim = bar_similarity(a, b)
        chroma.append(sim["chroma"])
        groove.append(sim["groove"])
    c, g = (
        np.concatenate(chroma) if chroma else np.empty(0),
        np.concatenate(groove) if groove else np.empty(0),
    )
    return {
        "chroma": float(c.mean()) if len(c) else math.nan,
        "groove": float(g.mean()) if len(g) else math.nan,
        "bars": len(c),
    }
