"""Evaluating a MuseMorphose as the paper does: attribute control and fidelity of style transfer, and perplexity.

Control (Wu & Yang 2021, §5): every test excerpt is transferred once per shift of −3..+3 classes of one
attribute on all its bars (the other attribute kept as measured); Spearman ρ between the requested and the
measured class of that attribute over all bars is its control score, and ρ between the requested class and the
measured class of the *other* attribute is the leak. Fidelity: chroma and groove similarity per bar between
each excerpt and its transfers (`museforge.metrics.transfer`). The model-agnostic measures live in
`museforge.metrics`; this module only drives the model. Classes are measured with the model's own tokenizer
boundaries.

It ties the family's sampling (the transfers), metrics and its training loss (perplexity is the trainer's
validation NLL, `museforge.families.musemorphose.loss.VAEStep`); the model card reports it
(`museforge.families.musemorphose.card`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
from torch.utils.data import DataLoader

from museforge.data.musemorphose import MuseMorphoseSegments, SegmentCollator
from museforge.families.musemorphose.decode import encode_piece, shifted_classes, transfer_rows
from museforge.families.musemorphose.loss import VAEStep
from museforge.families.musemorphose.model import MuseMorphose
from museforge.generation.decode import make_generator
from museforge.metrics.controls import control_fidelity, measure_bar_classes
from museforge.metrics.transfer import mean_similarity
from museforge.tokenizers.remi import RemiTokenizer

ATTRIBUTES = ("rhythm", "polyphony")
SHIFTS = (-3, -2, -1, 0, 1, 2, 3)
# the paper's Table 2 (Pop1K7): control ρ and leak onto the other attribute
PAPER = {"rho": {"rhythm": 0.95, "polyphony": 0.885}, "leak": {"rhythm": 0.023, "polyphony": 0.016}}


def evaluate_transfer(
    model: MuseMorphose,
    tok: RemiTokenizer,
    pieces: Sequence[str | Path | symusic.Score],
    *,
    bars: int | None = None,
    shifts: Sequence[int] = SHIFTS,
    seed: int = 0,
    candidates: int = 1,
    guidance: float = 0.0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Control ρ, leak and fidelity of transfers of the first ``bars`` bars (default: one model window) of each
    piece. Returns ``{"rho": {attr}, "leak": {attr}, "leak_inherent": {attr}, "leak_excess": {attr},
    "fidelity": {attr: {chroma, groove}}, "pieces", "bars", "shifts", "seconds_per_transfer"}``; an excerpt is
    transferred once per shift and attribute, ``guidance`` as in `transfer` (0, the default: the model alone).

    ``leak`` is the paper's: ρ between one attribute's requested class and the other's measured class, over
    every bar. A shift moves one attribute only, but the bars' own classes vary too, and where the two
    attributes are correlated in the music itself (on the music21 corpus, busier bars hold fewer notes at once)
    a model that plays exactly the requested classes still shows that correlation: ``leak_inherent`` is ρ
    between the requested classes themselves, and ``leak_excess`` = ``leak`` - ``leak_inherent`` is what the
    model adds, 0 for perfect control (on the paper's Pop1K7 the inherent part is near 0 and the two agree)."""
    if not pieces:
        raise ValueError("pieces is empty: evaluate_transfer needs at least one piece")
    if not shifts or any(not isinstance(s, int) for s in shifts):
        raise ValueError(f"shifts must be a non-empty sequence of ints, got {shifts!r}")
    bars = model.config.n_bars if bars is None else bars
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    n_cls = model.config.n_attr_classes
    gen = make_generator(seed, next(model.parameters()).device)
    requested: dict[str, dict[str, list[np.ndarray]]] = {a: {b: [] for b in ATTRIBUTES} for a in ATTRIBUTES}
    measured: dict[str, dict[str, list[np.ndarray]]] = {a: {b: [] for b in ATTRIBUTES} for a in ATTRIBUTES}
    pairs: dict[str, list[tuple[symusic.Score, symusic.Score]]] = {a: [] for a in ATTRIBUTES}
    transfers, elapsed = 0, 0.0
    for i, piece in enumerate(pieces):
        encoded = encode_piece(model, tok, piece).head(bars)
        m = encoded.n_bars
        original = tok.decode(encoded.ids)
        every = list(range(m))
        for attr in ATTRIBUTES:
            rows = []
            for s in shifts:
                r = shifted_classes(encoded.rhythm, s if attr == "rhythm" else None, every, n_cls)
                p = shifted_classes(encoded.polyphony, s if attr == "polyphony" else None, every, n_cls)
                rows.append((r, p))
            start = time.perf_counter()
            outs = transfer_rows(
                model, tok, encoded, rows, every, generator=gen, candidates=candidates, guidance=guidance
            )
            elapsed += time.perf_counter() - start
            transfers += len(rows)
            for (r, p), tokens in zip(rows, outs, strict=True):
                score = tok.decode(tokens)
                found = measure_bar_classes(score, tok.config.boundaries, m)
                asked = {"rhythm": r, "polyphony": p}
                for b in ATTRIBUTES:
                    requested[attr][b].append(asked[b])
                    measured[attr][b].append(found[b])
                pairs[attr].append((original, score))
        if progress is not None:
            progress(i + 1, len(pieces))
    rho, leak, inherent, fidelity = {}, {}, {}, {}
    for attr in ATTRIBUTES:
        other = next(b for b in ATTRIBUTES if b != attr)
        asked = {b: np.concatenate(requested[attr][b]) for b in ATTRIBUTES}
        got = control_fidelity(asked, {b: np.concatenate(measured[attr][b]) for b in ATTRIBUTES})
        rho[attr] = got["rho"][attr]
        leak[attr] = got["leak"][f"{attr}->{other}"]
        inherent[attr] = got["leak_inherent"][f"{attr}->{other}"]
        fidelity[attr] = mean_similarity(pairs[attr])
    return {
        "rho": rho,
        "leak": leak,
        "leak_inherent": inherent,
        "leak_excess": {a: leak[a] - inherent[a] for a in ATTRIBUTES},
        "fidelity": fidelity,
        "pieces": len(pieces),
        "bars": bars,
        "shifts": list(shifts),
        "candidates": candidates,
        "guidance": guidance,
        "transfers": transfers,
        "seconds_per_transfer": elapsed / max(transfers, 1),
    }


@torch.no_grad()
def reconstruction_nll(
    model: MuseMorphose,
    tok: RemiTokenizer,
    data_dir: str | Path,
    split: str = "test",
    max_segments: int | None = None,
    batch_size: int = 8,
) -> dict[str, float]:
    """Per-token reconstruction NLL and perplexity of a split's ``n_bars`` segments (end to end, z = posterior
    mean, as the trainer's validation), the perplexity MuseMorphose reports."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    c = model.config
    data = MuseMorphoseSegments(data_dir, split, tok, c.n_bars, c.max_dec_len, c.max_bar_tokens)
    if len(data) == 0:
        raise ValueError(
            f"{data_dir} has no {split} segment of {c.n_bars} bars within {c.max_dec_len} tokens"
        )
    count = len(data) if max_segments is None else min(max_segments, len(data))
    subset = torch.utils.data.Subset(data, range(count))
    loader = DataLoader(subset, batch_size=batch_size, collate_fn=SegmentCollator(tok.pad_id))
    step = VAEStep(c)
    device = next(model.parameters()).device
    model.eval()
    total, tokens = 0.0, 0.0
    for batch in loader:
        nll, metrics = step(model, {k: v.to(device) for k, v in batch.items()})
        total += float(nll) * metrics["tokens"]
        tokens += metrics["tokens"]
    mean = total / max(tokens, 1.0)
    return {"nll": mean, "perplexity": math.exp(mean), "n_segments": count, "n_tokens": int(tokens)}
