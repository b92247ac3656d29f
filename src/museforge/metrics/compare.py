"""Set-against-set comparison by MGEval's method (Yang & Lerch 2018), with both densities on one shared grid.

For one feature: the intra-set distances of the reference (every pair of its pieces), of the generated set, and
the inter-set distances (every generated piece against every reference piece) are smoothed with a Gaussian KDE.
The *overlap area* ∫ min(p_intra, p_inter) and the KL divergence KL(p_intra ‖ p_inter) say how far the generated
pieces sit from the reference compared with how far reference pieces sit from each other: overlap 1 and KL 0 when
the sets are alike. MGEval evaluated the two densities on different grids, which biases both numbers; here all
densities of a feature share one grid covering every sample.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

GRID_POINTS = 1000
MAX_KDE_SAMPLES = 5000
KL_FLOOR = 1e-10


def _stack(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Pieces × dims matrix of the pieces whose feature is fully defined."""
    if not vectors:
        return np.zeros((0, 0))
    matrix = np.vstack([np.atleast_1d(np.asarray(v, dtype=float)).ravel() for v in vectors])
    return matrix[~np.isnan(matrix).any(axis=1)]


def intra_distances(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """Euclidean distance of every pair of pieces within a set (NaN-featured pieces left out)."""
    matrix = _stack(vectors)
    from scipy.spatial.distance import pdist  # here: scipy is slow to import and generation never needs it

    return pdist(matrix) if len(matrix) > 1 else np.zeros(0)


def inter_distances(vectors_a: Sequence[np.ndarray], vectors_b: Sequence[np.ndarray]) -> np.ndarray:
    """Euclidean distance of every piece of one set to every piece of the other."""
    a, b = _stack(vectors_a), _stack(vectors_b)
    from scipy.spatial.distance import cdist

    return cdist(a, b).ravel() if len(a) and len(b) else np.zeros(0)


def _bandwidth(sample: np.ndarray, scale: float) -> float:
    """Scott's rule, floored so a sample of identical values still has a (narrow) density."""
    spread = float(sample.std()) if len(sample) > 1 else 0.0
    return max(spread * len(sample) ** -0.2, 1e-3 * scale)


def kde_on_grid(sample: np.ndarray, grid: np.ndarray, bandwidth: float) -> np.ndarray:
    """Gaussian KDE of ``sample`` evaluated on ``grid`` and renormalized to integrate to 1 there."""
    if len(sample) > MAX_KDE_SAMPLES:  # a fixed-seed subsample keeps large sets fast and results repeatable
        sample = np.random.default_rng(0).choice(sample, MAX_KDE_SAMPLES, replace=False)
    density = np.zeros(len(grid))
    for chunk in np.array_split(sample, max(1, len(sample) // 1000)):
        density += np.exp(-0.5 * ((grid[:, None] - chunk[None, :]) / bandwidth) ** 2).sum(axis=1)
    area = np.trapezoid(density, grid)
    return density / area if area > 0 else density


def shared_grid(samples: Sequence[np.ndarray]) -> tuple[np.ndarray, list[float]]:
    """One grid covering every sample ±4 bandwidths, and each sample's bandwidth."""
    values = np.concatenate([s for s in samples if len(s)])
    scale = max(float(np.abs(values).max()), 1.0)
    widths = [_bandwidth(s, scale) for s in samples]
    lo, hi = float(values.min()) - 4 * max(widths), float(values.max()) + 4 * max(widths)
    return np.linspace(lo, hi, GRID_POINTS), widths


def overlap_area(p: np.ndarray, q: np.ndarray, grid: np.ndarray) -> float:
    """∫ min(p, q) over the shared grid: 1 for identical densities, 0 for disjoint ones."""
    return float(np.trapezoid(np.minimum(p, q), grid))


def kl_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """KL(P ‖ Q) = Σ P log(P / Q) of the densities as distributions over the shared grid (Q floored at 1e-10)."""
    pn, qn = p / p.sum(), np.maximum(q / q.sum(), KL_FLOOR)
    mask = pn > 0
    return float((pn[mask] * np.log(pn[mask] / qn[mask])).sum())


@dataclass
class FeatureComparison:
    """One feature's comparison. ``overlap``/``kl``: reference intra-set vs inter-set (the headline numbers);
    ``overlap_generated``/``kl_generated``: generated intra-set vs inter-set."""

    overlap: float
    kl: float
    overlap_generated: float
    kl_generated: float
    n_reference: int
    n_generated: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class FeatureDensities:
    """The three KDEs of one feature on their shared grid (for plots)."""

    grid: np.ndarray
    intra_reference: np.ndarray
    intra_generated: np.ndarray
    inter: np.ndarray


def compare_feature(
    generated: Sequence[np.ndarray], reference: Sequence[np.ndarray]
) -> tuple[FeatureComparison, FeatureDensities | None]:
    """Overlap area and KL of one feature between a generated and a reference set (NaN with < 2 pieces a side)."""
    intra_ref, intra_gen = intra_distances(reference), intra_distances(generated)
    inter = inter_distances(generated, reference)
    n_ref, n_gen = len(_stack(reference)), len(_stack(generated))
    if not (len(intra_ref) and len(intra_gen) and len(inter)):
        return FeatureComparison(math.nan, math.nan, math.nan, math.nan, n_ref, n_gen), None
    grid, (w_ref, w_gen, w_inter) = shared_grid([intra_ref, intra_gen, inter])
    p_ref, p_gen = kde_on_grid(intra_ref, grid, w_ref), kde_on_grid(intra_gen, grid, w_gen)
    p_inter = kde_on_grid(inter, grid, w_inter)
    comparison = FeatureComparison(
        overlap=overlap_area(p_ref, p_inter, grid),
        kl=kl_divergence(p_ref, p_inter),
        overlap_generated=overlap_area(p_gen, p_inter, grid),
        kl_generated=kl_divergence(p_gen, p_inter),
        n_reference=n_ref,
        n_generated=n_gen,
    )
    return comparison, FeatureDensities(grid, p_ref, p_gen, p_inter)


def compare_sets(
    generated: Sequence[Mapping[str, np.ndarray]], reference: Sequence[Mapping[str, np.ndarray]]
) -> tuple[dict[str, FeatureComparison], dict[str, FeatureDensities]]:
    """Compare every feature present in both sets' per-piece feature dicts."""
    names = sorted(set().union(*generated) & set().union(*reference)) if generated and reference else []
    results: dict[str, FeatureComparison] = {}
    densities: dict[str, FeatureDensities] = {}
    for name in names:
        comparison, dens = compare_feature(
            [g[name] for g in generated if name in g], [r[name] for r in reference if name in r]
        )
        results[name] = comparison
        if dens is not None:
            densities[name] = dens
    return results, densities


def summarize(results: Mapping[str, FeatureComparison]) -> dict[str, float]:
    """Overall numbers: mean overlap and mean KL over the features where they are defined."""

    def mean(values: list[float]) -> float:
        finite = [v for v in values if not math.isnan(v)]
        return float(np.mean(finite)) if finite else math.nan

    return {
        "overlap": mean([r.overlap for r in results.values()]),
        "kl": mean([r.kl for r in results.values()]),
        "overlap_generated": mean([r.overlap_generated for r in results.values()]),
        "kl_generated": mean([r.kl_generated for r in results.values()]),
    }
