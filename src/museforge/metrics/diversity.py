"""How varied a set of samples is: a model fine-tuned on what listeners liked must not collapse onto one tune."""

from __future__ import annotations

import math
from collections.abc import Sequence

import symusic

from museforge.metrics.core import pitch_class_entropy


def distinct_ngram_share(sequences: Sequence[Sequence[int]], n: int = 4) -> float:
    """|distinct n-grams| / |n-grams| over the sequences pooled (distinct-n, Li et al. 2016): 1 when no n-gram
    repeats within or across the sequences, falling towards 1/|n-grams| as they repeat one another; NaN
    without any n-gram."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [tuple(s[i : i + n]) for s in sequences for i in range(len(s) - n + 1)]
    return len(set(grams)) / len(grams) if grams else math.nan


def mean_pitch_class_entropy(scores: Sequence[symusic.Score]) -> float:
    """The mean over scores of `pitch_class_entropy` (bits; MusPy's), skipping scores without pitched notes;
    NaN when none has any."""
    values = [v for v in (pitch_class_entropy(s) for s in scores) if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan
