"""Training a Performance RNN: its presets, and performance-event windows with Magenta's per-step controls."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from museforge.data.dataset import IGNORE_INDEX, TokenWindowDataset
from museforge.families.performance.model import (
    PerformanceRNN,
    PerformanceRNNConfig,
    controls_for_events,
    encode_controls,
    unset_at_random,
)
from museforge.tokenizers import PerformanceTokenizer
from museforge.training.recipes import (
    UNTIL_PLATEAU,
    Recipe,
    RunOptions,
    TrainingRun,
    seeded_run,
    token_windows,
    tokenized,
)

PRESETS: dict[str, Recipe] = {
    "tiny": Recipe(
        {"embed_dim": 32, "hidden_size": 64, "n_layers": 1},
        128,
        {"batch_size": 8, "lr": 1e-3, "warmup_steps": 20, "grad_clip": 3.0},
    ),
    "small": Recipe(
        {"embed_dim": 128, "hidden_size": 384, "n_layers": 2},
        512,
        {"batch_size": 32, "lr": 1e-3, "warmup_steps": 200, "grad_clip": 3.0, **UNTIL_PLATEAU},
    ),
    # Magenta's Performance RNN: 3 × 512 LSTM, batch 64, lr 1e-3, gradient clip 3.
    "base": Recipe(
        {"embed_dim": 256, "hidden_size": 512, "n_layers": 3},
        512,
        {"batch_size": 64, "lr": 1e-3, "warmup_steps": 500, "grad_clip": 3.0, **UNTIL_PLATEAU},
    ),
}

# Model-config fields the recipe takes from the data or its tokenizer, never from --init.
DATA_FIELDS = frozenset({"model", "vocab_size"})


class PerformanceControlWindows(Dataset):
    """Performance-event windows with Magenta's per-step controls [seq_len, 22].

    Controls look ahead (3 s density, 5 s pitch classes), so they are computed on the window plus up to
    ``lookahead`` further tokens of the same piece. During training each control of a window is unset with
    probability ``unset_p``, so the model also learns to play with a control left free.
    """

    def __init__(
        self,
        windows: TokenWindowDataset,
        tokenizer: PerformanceTokenizer,
        unset_p: float = 0.0,
        lookahead: int = 512,
    ) -> None:
        self.windows, self.tokenizer, self.unset_p, self.lookahead = windows, tokenizer, unset_p, lookahead

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start, end = (int(x) for x in self.windows.windows[i])
        seq_len = self.windows.seq_len
        ext = np.asarray(
            self.windows.cache.data[start : min(end, start + seq_len + self.lookahead)], np.int64
        )
        if self.windows.augment is not None:
            ext = self.windows.augment(ext)
        controls = controls_for_events(self.tokenizer.event_times(ext), self.tokenizer.onset_pitches(ext))
        controls = controls[:seq_len]  # [n, 22]
        if self.unset_p > 0:
            controls = unset_at_random(controls, self.unset_p)
        n = min(len(ext), seq_len)
        ids = torch.full((seq_len,), self.windows.pad_id, dtype=torch.long)
        ids[:n] = torch.from_numpy(ext[:n])
        labels = ids.clone()
        labels[n:] = IGNORE_INDEX
        padded = encode_controls(None, None).expand(seq_len, -1).clone()
        padded[:n] = controls[:n]
        return {"input_ids": ids, "labels": labels, "controls": padded}


def prepare(
    spec: Recipe, data_dir: Path, out_dir: Path, options: RunOptions, tokenizer_name: str
) -> TrainingRun:
    """Tokenize ``data_dir`` if needed; control windows whose training controls are unset at random."""
    tokenizer = tokenized(data_dir, tokenizer_name, options.workers)
    assert isinstance(tokenizer, PerformanceTokenizer)
    train, valid = token_windows(data_dir, tokenizer_name, tokenizer, spec.seq_len, options.max_shift)
    config = PerformanceRNNConfig(
        vocab_size=tokenizer.vocab_size, **{**spec.model, **options.model_overrides}
    )
    data = (
        PerformanceControlWindows(train, tokenizer, unset_p=options.unset_p),
        PerformanceControlWindows(valid, tokenizer),
    )
    train_config = options.train_config(spec, out_dir)
    return seeded_run(
        PerformanceRNN, config, data, (len(train), len(valid)), train_config, options.device, tokenizer
    )
