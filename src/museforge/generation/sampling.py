"""Pure functions over logits [..., V]: temperature, top-k, nucleus (top-p), masks, and drawing a token.

No model is involved, so every rule here is tested on hand-made distributions. Removed tokens get ``-inf``;
a row that would lose every token is an error, never a silent uniform draw.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """Divide by ``temperature``: below 1 sharpens the distribution, above 1 flattens it."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy decoding for 0), got {temperature}")
    return logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep exactly the ``k`` largest logits of each row (ties broken by index), remove the rest."""
    if k < 1:
        raise ValueError(f"top_k must be >= 1, got {k}")
    if k >= logits.shape[-1]:
        return logits
    idx = logits.topk(k, dim=-1).indices  # [..., k]
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, idx, True)
    return logits.masked_fill(~keep, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Nucleus filter: keep the smallest set of most likely tokens whose probability mass is >= ``p``.

    The most likely token always survives, so ``p`` near 0 becomes greedy decoding rather than an empty row.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {p}")
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # [..., V]
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # mass of the strictly more likely tokens
    drop_sorted = mass_before >= p  # once the mass before a token reaches p, the set is complete
    drop = torch.zeros_like(drop_sorted).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def apply_mask(logits: Tensor, allowed: Tensor) -> Tensor:
    """Remove every token whose ``allowed`` entry is False; ``allowed`` is bool [V] or [..., V]."""
    if allowed.dtype != torch.bool:
        raise ValueError(f"allowed must be a bool tensor, got {allowed.dtype}")
    if allowed.shape[-1] != logits.shape[-1]:
        raise ValueError(f"allowed has {allowed.shape[-1]} entries for a vocabulary of {logits.shape[-1]}")
    allowed = allowed.to(logits.device).expand_as(logits)
    if not allowed.any(dim=-1).all():
        raise ValueError("the mask allows no token for at least one sequence")
    return logits.masked_fill(~allowed, float("-inf"))


def sample(
    logits: Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Draw one token per row of ``logits`` [B, V] -> [B] (or [V] -> scalar).

    The mask is applied first (so top-k/top-p choose among allowed tokens), then temperature, top-k and
    top-p. ``temperature == 0`` means greedy. A fixed ``generator`` gives the same draw every time.
    """
    squeeze = logits.dim() == 1
    x = logits.float().unsqueeze(0) if squeeze else logits.float()  # [B, V]
    probs = _probabilities(x, temperature, top_k, top_p, mask)
    out = probs.argmax(dim=-1) if temperature == 0 else draw(probs, generator)  # [B]
    return out[0] if squeeze else out


def sample_rows(
    logits: Tensor,
    generators: Sequence[torch.Generator],
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """`sample` for rows that each draw from their own generator: ``logits`` [B, V] -> [B].

    Rows decoded together (`museforge.generation.batched`) each keep the generator of the caller that asked
    for them. Every op here works on each row alone (the filters, the softmax, the draw), so row ``j`` gets
    the token ``sample(logits[j:j+1], generators[j], ...)`` gives it: the same procedure, the same floats.
    """
    if len(generators) != logits.shape[0]:
        raise ValueError(f"need one generator per row: {len(generators)} for {logits.shape[0]} rows")
    probs = _probabilities(logits.float(), temperature, top_k, top_p, mask)
    return probs.argmax(dim=-1) if temperature == 0 else draw_rows(probs, generators)


def _probabilities(
    x: Tensor, temperature: float, top_k: int | None, top_p: float | None, mask: Tensor | None
) -> Tensor:
    """The float logits [B, V] after the mask and, unless greedy (then the masked logits, for argmax only),
    temperature, top-k and top-p, as probabilities."""
    if mask is not None:
        x = apply_mask(x, mask)
    if temperature == 0:
        return x
    if temperature != 1.0:  # dividing by 1 changes no value, so skip the op
        x = apply_temperature(x, temperature)
    if top_k is not None:
        x = top_k_filter(x, top_k)
    if top_p is not None:
        x = top_p_filter(x, top_p)
    return x.softmax(dim=-1)


def draw(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token per row of ``probs`` [B, V] -> [B], by the exponential race: ``argmax(p / E)`` with
    ``E ~ Exp(1)`` per token picks token i with probability p_i.

    This is what ``torch.multinomial(probs, 1)`` computes (same use of the generator, so the same draws), minus
    its input checks, which cost two synchronising ``.item()`` calls per sampling step; the rows here come from
    a softmax, and `apply_mask` already refuses rows with no allowed token.
    """
    race = torch.empty_like(probs).exponential_(generator=generator)  # [B, V]
    return torch.div(probs, race, out=race).argmax(dim=-1)


def draw_rows(probs: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """`draw` with a generator per row: row ``j``'s race is drawn from ``generators[j]`` exactly as `draw`
    draws a batch of one (``V`` exponentials, in order), so a row's token does not depend on the others."""
    race = torch.empty_like(probs)  # [B, V]
    for row, generator in zip(race, generators, strict=True):
        row.exponential_(generator=generator)
    return torch.div(probs, race, out=race).argmax(dim=-1)
