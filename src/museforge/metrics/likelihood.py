"""Likelihood of token sequences under a model, an n-gram baseline, and validity of generated sequences.

Any model plugs in through `TokenScorer`: given a sequence it returns the natural-log probability of each token
after the first given the tokens before it. The n-gram model is the baseline every neural model must beat.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import symusic


class TokenScorer(Protocol):
    """A model that scores sequences: ``log_probs(ids)[i] = ln p(ids[i + 1] | ids[: i + 1])``."""

    def log_probs(self, ids: Sequence[int]) -> np.ndarray: ...


@dataclass
class LikelihoodResult:
    """Mean negative log-likelihood per predicted token (nats) and its perplexity exp(nll)."""

    nll: float
    perplexity: float
    n_tokens: int
    n_sequences: int

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def evaluate_likelihood(model: TokenScorer, sequences: Sequence[Sequence[int]]) -> LikelihoodResult:
    """Token-weighted NLL over ``sequences`` (each token after the first is predicted once); NaN without tokens."""
    total = 0.0
    count = 0
    for ids in sequences:
        if len(ids) < 2:
            continue
        logp = np.asarray(model.log_probs(ids), dtype=float)
        if logp.shape != (len(ids) - 1,):
            raise ValueError(f"log_probs returned shape {logp.shape} for a sequence of {len(ids)} tokens")
        total -= float(logp.sum())
        count += len(logp)
    nll = total / count if count else math.nan
    return LikelihoodResult(
        nll=nll, perplexity=math.exp(nll) if count else math.nan, n_tokens=count, n_sequences=len(sequences)
    )


class NGramModel:
    """Interpolated n-gram model with add-``alpha`` smoothing at every order.

    p(w | h) = Σ_k λ_k · (c(h_k, w) + α) / (c(h_k) + α·V) over context lengths k = 0..n−1 with equal weights λ
    (a context never seen still gives a proper distribution), so every p sums to 1 over the vocabulary.
    """

    def __init__(self, n: int, vocab_size: int, alpha: float = 0.1) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be positive, got {vocab_size}")
        if alpha <= 0:
            raise ValueError(f"alpha must be positive, got {alpha}")
        self.n, self.vocab_size, self.alpha = n, vocab_size, alpha
        self.counts: list[Counter[tuple[int, ...]]] = [Counter() for _ in range(n)]
        self.context_counts: list[Counter[tuple[int, ...]]] = [Counter() for _ in range(n)]

    def fit(self, sequences: Sequence[Sequence[int]]) -> NGramModel:
        """Count every (context, token) of the sequences; returns self."""
        for ids in sequences:
            ids = [int(i) for i in ids]
            if any(not 0 <= i < self.vocab_size for i in ids):
                raise ValueError(f"token id outside the vocabulary of size {self.vocab_size}")
            for pos in range(1, len(ids)):
                for k in range(self.n):
                    if pos - k < 0:
                        break
                    context = tuple(ids[pos - k : pos])
                    self.counts[k][(*context, ids[pos])] += 1
                    self.context_counts[k][context] += 1
        return self

    def prob(self, context: Sequence[int], token: int) -> float:
        """p(token | context), using the last n − 1 tokens of the context."""
        context = tuple(int(i) for i in context)
        orders = [k for k in range(self.n) if k <= len(context)]
        total = 0.0
        for k in orders:
            ctx = context[len(context) - k :] if k else ()
            total += (self.counts[k][(*ctx, token)] + self.alpha) / (
                self.context_counts[k][ctx] + self.alpha * self.vocab_size
            )
        return total / len(orders)

    def log_probs(self, ids: Sequence[int]) -> np.ndarray:
        return np.log([self.prob(ids[:pos], int(ids[pos])) for pos in range(1, len(ids))])


@dataclass
class ValidityResult:
    """Share of sequences that decode to well-formed MIDI, and why the others did not (index → reason)."""

    rate: float
    n_valid: int
    n_sequences: int
    failures: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def check_score(score: symusic.Score) -> str | None:
    """Why a decoded score is not well-formed MIDI (None when it is): notes, ranges, and a MIDI round trip."""
    n_notes = 0
    for track in score.tracks:
        notes = track.notes.numpy()
        n_notes += len(notes["time"])
        if len(notes["time"]) and ((notes["pitch"] < 0).any() or (notes["pitch"] > 127).any()):
            return "pitch outside 0..127"
        if len(notes["time"]) and ((notes["time"] < 0).any() or (notes["duration"] <= 0).any()):
            return "negative time or non-positive duration"
    if n_notes == 0:
        return "no notes"
    try:
        back = symusic.Score.from_midi(score.dumps_midi())
    except Exception as exc:  # symusic raises plain runtime errors on malformed data
        return f"MIDI round trip failed: {exc}"
    if back.note_num() != n_notes:
        return f"MIDI round trip kept {back.note_num()} of {n_notes} notes"
    return None


def validity_rate(
    sequences: Sequence[Sequence[int]], decode: Callable[[Sequence[int]], symusic.Score]
) -> ValidityResult:
    """Share of ``sequences`` that ``decode`` turns into well-formed MIDI (`check_score`); NaN for none given."""
    failures: dict[int, str] = {}
    for index, ids in enumerate(sequences):
        try:
            reason = check_score(decode(ids))
        except Exception as exc:  # any decoder error makes the sequence invalid, it must not stop the count
            reason = f"decode failed: {type(exc).__name__}: {exc}"
        if reason is not None:
            failures[index] = reason
    n = len(sequences)
    return ValidityResult(
        rate=(n - len(failures)) / n if n else math.nan,
        n_valid=n - len(failures),
        n_sequences=n,
        failures=failures,
    )
