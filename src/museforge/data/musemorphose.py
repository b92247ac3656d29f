"""MuseMorphose's view of the token cache: bar-aligned REMI segments with per-bar attribute classes, and their
batches. Training reads them from the cache (`MuseMorphoseSegments`), generation makes them from a piece's
tokens (`make_segment`), so they live here, below both.

The attribute classes of a bar are read from the ``Rhythm_k Polyphony_k`` tokens the REMI tokenizer writes
after each ``Bar``. The encoder sees each bar without those two tokens (the classes reach the decoder through
their embeddings, so the latent need not carry them); the decoder sees the segment as the cache holds it, led
by the piece's style token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from museforge.data.dataset import IGNORE_INDEX, BarSegmentDataset
from museforge.tokenizers.remi import RemiTokenizer


@dataclass
class Segment:
    """One example: decoder ids [T] with each token's bar [T], each bar's encoder ids, and bar classes [N]."""

    dec_ids: np.ndarray
    dec_bar: np.ndarray
    bars: list[np.ndarray]
    rhythm: np.ndarray
    polyphony: np.ndarray


def bar_classes_from_tokens(
    ids: np.ndarray, bar_starts: np.ndarray, tok: RemiTokenizer
) -> tuple[np.ndarray, np.ndarray]:
    """Rhythm and polyphony classes [N] read from the two tokens after each Bar (the tokenizer writes them)."""
    rhythm = {t: k for k, t in enumerate(tok.rhythm_ids)}
    poly = {t: k for k, t in enumerate(tok.polyphony_ids)}
    r = np.zeros(len(bar_starts), dtype=np.int64)
    p = np.zeros(len(bar_starts), dtype=np.int64)
    for b, s in enumerate(bar_starts):
        head = [int(t) for t in ids[s + 1 : s + 3]]
        if len(head) != 2 or head[0] not in rhythm or head[1] not in poly:
            raise ValueError(
                f"bar {b} has no Rhythm/Polyphony tokens after its Bar: tokenize with attributes"
            )
        r[b], p[b] = rhythm[head[0]], poly[head[1]]
    return r, p


def make_segment(
    ids: np.ndarray, bar_starts: np.ndarray, tok: RemiTokenizer, style_id: int | None, max_bar_tokens: int
) -> Segment:
    """The model's view of REMI ``ids`` whose bars start at ``bar_starts`` (``ids[bar_starts[0]]`` is a Bar)."""
    ids = np.asarray(ids, dtype=np.int64)
    starts = np.asarray(bar_starts, dtype=np.int64)
    rhythm, poly = bar_classes_from_tokens(ids, starts, tok)
    ends = [*starts[1:].tolist(), len(ids)]
    bars = []
    for s, e in zip(starts.tolist(), ends, strict=True):
        content = ids[s:e]
        bars.append(content[~tok.is_control(content)][:max_bar_tokens])
    seg = ids[starts[0] :]
    dec_ids = seg if style_id is None else np.concatenate([[style_id], seg])
    dec_bar = np.maximum(np.cumsum(dec_ids == tok.bar_id) - 1, 0)
    return Segment(dec_ids, dec_bar, bars, rhythm, poly)


class MuseMorphoseSegments(Dataset):
    """`BarSegmentDataset` segments of ``n_bars`` bars as `Segment` dicts, led by their piece's style token and
    transposed by ``augment`` (token space) when given."""

    def __init__(
        self,
        data_dir: Path | str,
        split: str,
        tokenizer: RemiTokenizer,
        n_bars: int,
        max_tokens: int,
        max_bar_tokens: int,
        hop_bars: int | None = None,
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.segments = BarSegmentDataset(data_dir, split, n_bars, hop_bars, max_tokens - 1)
        self.tok, self.max_bar_tokens, self.augment = tokenizer, max_bar_tokens, augment
        cache = self.segments.cache
        self.style_ids = [
            tokenizer.style_ids.get(str(piece.get("style", "")).lower()) for piece in cache.pieces
        ]

    def __len__(self) -> int:
        return len(self.segments)

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = self.segments[i]
        ids = item["input_ids"].numpy()
        if self.augment is not None:
            ids = self.augment(ids)
        start = int(self.segments.segments[i][0])
        cache = self.segments.cache
        piece = int(np.searchsorted(cache.offsets, cache.bars[start], side="right") - 1)
        seg = make_segment(
            ids, item["bar_starts"].numpy(), self.tok, self.style_ids[piece], self.max_bar_tokens
        )
        return seg.__dict__


def collate_segments(items: Sequence[dict[str, Any]], pad_id: int) -> dict[str, Tensor]:
    """Pad segments into a batch: ``dec_ids``/``labels``/``dec_bar`` [B, T], ``bar_ids``/``bar_mask``
    [B, N, Lb], ``rhythm``/``polyphony``/``bar_valid`` [B, N]."""
    b = len(items)
    t = max(len(x["dec_ids"]) for x in items)
    n = max(len(x["bars"]) for x in items)
    lb = max(len(bar) for x in items for bar in x["bars"])
    dec_ids = torch.full((b, t), pad_id, dtype=torch.long)
    labels = torch.full((b, t), IGNORE_INDEX, dtype=torch.long)
    dec_bar = torch.zeros(b, t, dtype=torch.long)
    bar_ids = torch.full((b, n, lb), pad_id, dtype=torch.long)
    bar_mask = torch.zeros(b, n, lb, dtype=torch.bool)
    rhythm = torch.zeros(b, n, dtype=torch.long)
    polyphony = torch.zeros(b, n, dtype=torch.long)
    bar_valid = torch.zeros(b, n, dtype=torch.bool)
    for i, x in enumerate(items):
        k = len(x["dec_ids"])
        dec_ids[i, :k] = torch.as_tensor(x["dec_ids"])
        labels[i, :k] = dec_ids[i, :k]
        dec_bar[i, :k] = torch.as_tensor(x["dec_bar"])
        for j, bar in enumerate(x["bars"]):
            bar_ids[i, j, : len(bar)] = torch.as_tensor(bar)
            bar_mask[i, j, : len(bar)] = True
        m = len(x["bars"])
        rhythm[i, :m], polyphony[i, :m] = torch.as_tensor(x["rhythm"]), torch.as_tensor(x["polyphony"])
        bar_valid[i, :m] = True
    return {
        "dec_ids": dec_ids,
        "labels": labels,
        "dec_bar": dec_bar,
        "bar_ids": bar_ids,
        "bar_mask": bar_mask,
        "rhythm": rhythm,
        "polyphony": polyphony,
        "bar_valid": bar_valid,
    }


class SegmentCollator:
    """Picklable ``collate_fn`` (DataLoader workers) padding with the tokenizer's PAD id."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: Sequence[dict[str, Any]]) -> dict[str, Tensor]:
        return collate_segments(items, self.pad_id)
