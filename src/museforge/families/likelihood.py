"""The held-out likelihood the model card and the lab's gate report, for any family with a token likelihood."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from museforge.data.dataset import TokenCache
from museforge.families import get_family, load_checkpoint
from museforge.metrics.likelihood import evaluate_likelihood


def heldout_likelihood(
    checkpoint_dir: Path,
    data_dir: Path,
    max_pieces: int,
    *,
    split: str = "test",
    seed: int = 0,
    device: str | torch.device = "cpu",
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """Per-token NLL and perplexity of a checkpoint on a split, overall and per style, through the metrics'
    likelihood interface.

    Past ``max_pieces`` a seeded random sample is scored: the split's first pieces come from the first
    collections built (chorales before folk songs), so taking them would weigh the styles unlike the split.
    ``max_tokens`` scores only each piece's first tokens, so one long piece cannot dominate the time.
    """
    ckpt = load_checkpoint(checkpoint_dir, device)
    tok_name = ckpt.tokenizer["name"]
    cache = TokenCache(data_dir, tok_name, split)
    if len(cache) == 0:
        raise ValueError(f"{data_dir} has no {split} pieces tokenized with {tok_name}")
    family = get_family(ckpt.model_name)
    scorer = family.scorer(ckpt.model, cache.tokenizer())
    if scorer is None:
        raise ValueError(f"a {family.label} has no token likelihood to score held-out music with")
    chosen = range(len(cache))
    if len(cache) > max_pieces:
        chosen = sorted(
            np.random.default_rng(seed).choice(len(cache), size=max_pieces, replace=False).tolist()
        )
    by_style: dict[str, list[int]] = {}
    for i in chosen:
        by_style.setdefault(str(cache.pieces[i].get("style")), []).append(i)
    styles = {
        style: evaluate_likelihood(scorer, [cache.piece(i)[:max_tokens] for i in pieces]).to_dict()
        for style, pieces in sorted(by_style.items())
    }
    n_tokens = sum(r["n_tokens"] for r in styles.values())
    nll = sum(r["nll"] * r["n_tokens"] for r in styles.values()) / n_tokens if n_tokens else math.nan
    return {
        "nll": nll,
        "perplexity": math.exp(nll) if n_tokens else math.nan,
        "n_tokens": n_tokens,
        "n_sequences": len(chosen),
        "split_pieces": len(cache),
        "context": getattr(ckpt.model.config, "max_seq_len", None),
        "by_style": styles,
    }
