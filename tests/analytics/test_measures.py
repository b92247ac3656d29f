"""The taste measures on hand-computed values, and against scipy where it defines the same statistic."""

import math

import numpy as np
import pytest
from scipy import stats

from museforge.analytics.measures import (
    bimodality_coefficient,
    esteban_ray,
    extreme_share,
    herfindahl,
    kmeans,
    normalized_entropy,
    silhouette,
    taste_clusters,
)


def test_a_listener_of_one_style_is_fully_concentrated():
    chorales_only = [12, 0, 0, 0]
    assert normalized_entropy(chorales_only) == 0
    assert herfindahl(chorales_only) == 1


def test_even_interest_is_fully_spread():
    assert normalized_entropy([3, 3, 3, 3]) == pytest.approx(1)
    assert herfindahl([3, 3, 3, 3]) == pytest.approx(0.25)


def test_hand_computed_shares():
    # p = (0.5, 0.25, 0.25): H = 1.5 bits over log2(4) = 2 bits; HHI = 0.25 + 2 * 0.0625
    assert normalized_entropy([2, 1, 1, 0]) == pytest.approx(0.75)
    assert normalized_entropy([2, 1, 1], n_categories=4) == pytest.approx(0.75)
    assert herfindahl([2, 1, 1, 0]) == pytest.approx(0.375)


def test_undefined_is_nan():
    assert math.isnan(normalized_entropy([0, 0, 0]))
    assert math.isnan(normalized_entropy([5]))
    assert math.isnan(herfindahl([]))
    assert math.isnan(extreme_share([]))
    assert math.isnan(bimodality_coefficient([4, 4, 4, 4, 4]))
    assert math.isnan(bimodality_coefficient([1, 5, 1]))
    with pytest.raises(ValueError, match="non-negative"):
        herfindahl([1, -1])


def test_extreme_share():
    assert extreme_share([1, 5, 3, 4, 5]) == pytest.approx(0.6)


def test_bimodality_coefficient_by_hand_and_against_scipy():
    # [1, 1, 5, 5]: skewness 0; m2 = 4, m4 = 16, so excess = 3/2 * (5 * (1 - 3) + 6) = -6 and
    # BC = 1 / (-6 + 3 * 9 / 2) = 1 / 7.5
    assert bimodality_coefficient([1, 1, 5, 5]) == pytest.approx(1 / 7.5)
    rng = np.random.default_rng(3)
    for x in (rng.integers(1, 6, 40), rng.normal(size=25)):
        g, k, n = stats.skew(x, bias=False), stats.kurtosis(x, bias=False), len(x)
        assert bimodality_coefficient(x) == pytest.approx(
            (g**2 + 1) / (k + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3)))
        )


def test_polarized_ratings_score_above_the_uniform_threshold():
    polarized = [1] * 10 + [5] * 10
    middling = [3] * 8 + [2, 4] * 6
    assert bimodality_coefficient(polarized) > 5 / 9 > bimodality_coefficient(middling)


def test_kmeans_and_silhouette_find_two_separate_groups():
    x = np.array([[1, 0], [0.9, 0.1], [0.95, 0.05], [0, 1], [0.1, 0.9], [0.05, 0.95]])
    labels, _ = kmeans(x, 2, seed=0)
    assert len(set(labels[:3])) == 1 and len(set(labels[3:])) == 1 and labels[0] != labels[3]
    assert silhouette(x, labels) > 0.8
    assert math.isnan(silhouette(x, np.zeros(6, dtype=int)))


def test_silhouette_by_hand():
    # points 0, 1 | 4: a(0) = 1, b(0) = 4 -> 0.75; a(1) = 1, b(1) = 3 -> 2/3; the lone point scores 0
    x = np.array([[0.0], [1.0], [4.0]])
    assert silhouette(x, np.array([0, 0, 1])) == pytest.approx((0.75 + 2 / 3 + 0) / 3)


def test_taste_clusters_chooses_k_by_silhouette():
    rng = np.random.default_rng(0)
    groups = [np.array(c) for c in ([1, 0, 0], [0, 1, 0], [0, 0, 1])]
    x = np.vstack([c + rng.normal(0, 0.03, (10, 3)) for c in groups])
    found = taste_clusters(x, max_k=6, seed=0)
    assert len(found.centers) == 3 and found.silhouette > 0.8
    assert found.shares == pytest.approx([1 / 3] * 3)


def test_esteban_ray_by_hand():
    # two equal groups at distance 1: 2 * 0.5^(1 + 1.3) * 0.5 * 1 = 0.5^2.3
    assert esteban_ray([0.5, 0.5], np.array([[0.0], [1.0]])) == pytest.approx(0.5**2.3)
    assert esteban_ray([1.0], np.array([[0.3, 0.7]])) == 0
    with pytest.raises(ValueError, match="alpha"):
        esteban_ray([1, 1], np.zeros((2, 1)), alpha=2)


def test_two_opposed_groups_are_more_polarized_than_one_spread_group():
    rng = np.random.default_rng(1)
    opposed = np.vstack(
        [np.array([1, 0]) + rng.normal(0, 0.02, (20, 2)), np.array([0, 1]) + rng.normal(0, 0.02, (20, 2))]
    )
    one = np.array([0.5, 0.5]) + rng.normal(0, 0.05, (40, 2))
    polar = [esteban_ray(c.shares, c.centers) for c in (taste_clusters(opposed), taste_clusters(one))]
    assert polar[0] > polar[1]
