"""Measures of listeners' taste: pure functions over small vectors that the store has already aggregated.

The store counts (generations per style, ratings per value) inside the database; these functions turn those
counts into the figures the Insights and My-taste pages show. Each returns NaN where the measure is undefined
(no data, too few values), never a made-up 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

NAN = float("nan")


def _shares(counts: Sequence[float]) -> np.ndarray | None:
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 1 or np.any(c < 0):
        raise ValueError("counts must be a flat sequence of non-negative numbers")
    total = c.sum()
    return None if total <= 0 else c / total


def normalized_entropy(counts: Sequence[float], n_categories: int | None = None) -> float:
    """How spread a listener's interest is over ``n_categories`` styles (default ``len(counts)``).

    H = −Σ p_i log p_i / log K with p_i = c_i / Σ c and K categories: 0 when everything is one style, 1 when
    all K styles are equally liked. NaN with no counts or K < 2.
    """
    p = _shares(counts)
    k = len(counts) if n_categories is None else n_categories
    if p is None or k < 2:
        return NAN
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(k))


def herfindahl(counts: Sequence[float]) -> float:
    """Herfindahl–Hirschman index of the shares: HHI = Σ p_i², 1 for a single style, 1/K for K equal ones.
    NaN with no counts."""
    p = _shares(counts)
    return NAN if p is None else float((p * p).sum())


def extreme_share(ratings: Sequence[int], low: int = 1, high: int = 5) -> float:
    """Share of ratings at either end of the scale: #{r ∈ {low, high}} / n. NaN with no ratings."""
    if len(ratings) == 0:
        return NAN
    r = np.asarray(ratings)
    return float(((r == low) | (r == high)).mean())


def bimodality_coefficient(values: Sequence[float]) -> float:
    """Sarle's bimodality coefficient of a sample: BC = (g² + 1) / (κ + 3 (n − 1)² / ((n − 2)(n − 3))).

    g is the sample skewness and κ the sample excess kurtosis, both bias-corrected (as SAS and
    ``scipy.stats.skew/kurtosis(bias=False)`` compute them). BC > 5/9 ≈ 0.555 (the uniform distribution's
    value) suggests two modes: a listener who rates only 1s and 5s. NaN for n < 4 or constant values.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    if n < 4:
        return NAN
    d = x - x.mean()
    m2, m3, m4 = (d**2).mean(), (d**3).mean(), (d**4).mean()
    if m2 <= 0:
        return NAN
    g1 = m3 / m2**1.5
    skew = math.sqrt(n * (n - 1)) / (n - 2) * g1
    excess = (n - 1) / ((n - 2) * (n - 3)) * ((n + 1) * (m4 / m2**2 - 3) + 6)
    return float((skew**2 + 1) / (excess + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def kmeans(x: np.ndarray, k: int, *, seed: int = 0, iterations: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: (labels [n], centers [k, d]) for points ``x`` [n, d].

    Deterministic for a seed; an emptied cluster is re-seeded with the point farthest from its center."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    rng = np.random.default_rng(seed)
    centers = [x[rng.integers(n)]]
    for _ in range(1, k):
        d2 = np.min([((x - c) ** 2).sum(1) for c in centers], axis=0)
        total = d2.sum()
        centers.append(x[rng.choice(n, p=d2 / total)] if total > 0 else x[rng.integers(n)])
    c = np.array(centers)
    labels = np.full(n, -1)
    for _ in range(iterations):
        dist = ((x[:, None, :] - c[None]) ** 2).sum(-1)  # [n, k]
        new = dist.argmin(1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            members = x[labels == j]
            c[j] = members.mean(0) if len(members) else x[dist[np.arange(n), labels].argmax()]
    return labels, c


def _distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of x [n, n], through the Gram matrix (no [n, n, d] array)."""
    sq = (x * x).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2)


def silhouette(x: np.ndarray, labels: np.ndarray, *, distances: np.ndarray | None = None) -> float:
    """Mean silhouette s = mean_i (b_i − a_i) / max(a_i, b_i), with a_i the mean distance from point i to the
    others of its cluster and b_i the least mean distance to another cluster (s_i = 0 for a point alone in its
    cluster, as scikit-learn does). NaN unless 2 ≤ #clusters ≤ n − 1. ``distances`` may pass the points'
    distance matrix when several labelings of the same points are scored."""
    x = np.asarray(x, dtype=np.float64)
    ids, own = np.unique(np.asarray(labels), return_inverse=True)
    n = len(x)
    if not 2 <= len(ids) <= n - 1:
        return NAN
    members = np.eye(len(ids))[own]  # [n, k] one-hot
    sums = (
        _distances(x) if distances is None else distances
    ) @ members  # [n, k] distance from each point to all of each cluster
    sizes = members.sum(0)
    rows = np.arange(n)
    a = sums[rows, own] / np.maximum(sizes[own] - 1, 1)
    means = sums / sizes
    means[rows, own] = np.inf
    b = means.min(1)
    top = np.maximum(a, b)
    scores = np.where(top > 0, (b - a) / np.where(top > 0, top, 1.0), 0.0)
    scores[sizes[own] == 1] = 0.0
    return float(scores.mean())


@dataclass(frozen=True)
class TasteClusters:
    """Listeners grouped by their style-interest vectors."""

    labels: np.ndarray  # [n] cluster of each listener
    centers: np.ndarray  # [k, d] each cluster's mean interest vector
    silhouette: float  # NaN when one cluster was kept

    @property
    def shares(self) -> np.ndarray:
        """Share of listeners in each cluster [k]."""
        return np.bincount(self.labels, minlength=len(self.centers)) / len(self.labels)


def taste_clusters(x: np.ndarray, *, max_k: int = 6, seed: int = 0) -> TasteClusters:
    """k-means over the rows of ``x`` (one style-interest vector per listener) with k in 2..max_k chosen by the
    best mean silhouette; one cluster when no k scores above 0 (no structure) or there are under 3 listeners."""
    x = np.asarray(x, dtype=np.float64)
    dist = _distances(x)
    best = TasteClusters(np.zeros(len(x), dtype=int), x.mean(0, keepdims=True), NAN)
    for k in range(2, min(max_k, len(x) - 1) + 1):
        labels, centers = kmeans(x, k, seed=seed)
        score = silhouette(x, labels, distances=dist)
        if score > 0 and (math.isnan(best.silhouette) or score > best.silhouette):
            best = TasteClusters(labels, centers, score)
    return best


def esteban_ray(shares: Sequence[float], positions: np.ndarray, alpha: float = 1.3) -> float:
    """Esteban–Ray polarization of a population in groups: P = Σ_i Σ_j π_i^(1+α) π_j ‖y_i − y_j‖.

    π_i is group i's share of the population (normalised to sum 1) and y_i its position (here a cluster's mean
    style-interest vector, so distances lie in [0, √2]); α ∈ [0, 1.6] weighs identification with one's own
    group (1.3 by default, a common middle choice). P is 0 for one group or identical groups, and largest for
    two equal groups far apart: it rises as groups get fewer, larger and more distant. NaN for no groups."""
    if not 0 <= alpha <= 1.6:
        raise ValueError(f"alpha must be in [0, 1.6], got {alpha}")
    p = _shares(shares)
    if p is None:
        return NAN
    y = np.asarray(positions, dtype=np.float64).reshape(len(p), -1)
    dist = np.sqrt(((y[:, None, :] - y[None]) ** 2).sum(-1))
    return float(((p ** (1 + alpha))[:, None] * p[None, :] * dist).sum())
