"""Training a MuseMorphose: its presets, bar-aligned REMI segments, the VAE's loss step and batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from museforge.data.dataset import RandomTransposition, TokenCache
from museforge.data.musemorphose import MuseMorphoseSegments, SegmentCollator
from museforge.families.musemorphose.loss import VAEStep
from museforge.families.musemorphose.model import MuseMorphose, MuseMorphoseConfig
from museforge.tokenizers import RemiTokenizer
from museforge.training.recipes import UNTIL_PLATEAU, Recipe, RunOptions, TrainingRun, seeded_run, tokenized

# seq_len: the longest decoder segment (longer segments are skipped). small uses 8-bar segments, as most
# pieces of the music21 corpus are short; base is the paper's: 16 bars, batch 4, Adam 1e-4, 200 warm-up
# steps, cosine to 5e-6 over 150k steps, clip 0.5.
PRESETS: dict[str, Recipe] = {
    "tiny": Recipe({"preset": "tiny"}, 512, {"batch_size": 4, "lr": 1e-3, "warmup_steps": 10}),
    "small": Recipe(
        {"preset": "small", "n_bars": 8, "max_dec_len": 768},
        768,
        {"batch_size": 16, "lr": 3e-4, "warmup_steps": 200, "grad_clip": 0.5, **UNTIL_PLATEAU},
    ),
    "base": Recipe(
        {"preset": "base"},
        1280,
        {
            "batch_size": 4,
            "lr": 1e-4,
            "min_lr_ratio": 0.05,
            "warmup_steps": 200,
            "grad_clip": 0.5,
            "beta2": 0.999,
            "weight_decay": 0.0,
            "max_steps": 150_000,
            **UNTIL_PLATEAU,
        },
    ),
}

# Model-config fields the recipe takes from the data or its tokenizer, never from --init.
DATA_FIELDS = frozenset({"model", "vocab_size", "default_rhythm", "default_polyphony"})


def most_frequent_classes(data_dir: Path, tokenizer: RemiTokenizer) -> tuple[int, int]:
    """The training split's most frequent rhythm and polyphony classes (MuseMorphose's default plan)."""
    data = np.asarray(TokenCache(data_dir, "remi", "train").data, dtype=np.int64)
    counts = np.bincount(data, minlength=tokenizer.vocab_size)
    return (
        int(np.argmax(counts[list(tokenizer.rhythm_ids)])),
        int(np.argmax(counts[list(tokenizer.polyphony_ids)])),
    )


def segments(
    data_dir: Path, tokenizer: RemiTokenizer, config: MuseMorphoseConfig, seq_len: int, max_shift: int
) -> tuple[MuseMorphoseSegments, MuseMorphoseSegments]:
    """Training segments every quarter segment (transposed at random), validation segments end to end."""
    augment = RandomTransposition(tokenizer, max_shift) if max_shift > 0 else None
    common = {"tokenizer": tokenizer, "n_bars": config.n_bars, "max_tokens": seq_len}
    train = MuseMorphoseSegments(
        data_dir, "train", **common, max_bar_tokens=config.max_bar_tokens,
        hop_bars=max(1, config.n_bars // 4), augment=augment,
    )  # fmt: skip
    valid = MuseMorphoseSegments(data_dir, "valid", **common, max_bar_tokens=config.max_bar_tokens)
    if len(train) == 0:
        raise ValueError(
            f"{data_dir} has no training segment of {config.n_bars} bars within {seq_len} tokens"
        )
    return train, valid


def prepare(
    spec: Recipe, data_dir: Path, out_dir: Path, options: RunOptions, tokenizer_name: str
) -> TrainingRun:
    """Tokenize ``data_dir`` if needed; a VAE whose default bar plan is the data's most frequent classes."""
    tokenizer = tokenized(data_dir, tokenizer_name, options.workers)
    assert isinstance(tokenizer, RemiTokenizer)
    overrides = dict(options.model_overrides)
    rhythm, poly = most_frequent_classes(Path(data_dir), tokenizer)
    config = MuseMorphoseConfig.preset(
        overrides.pop("preset", spec.model["preset"]),
        tokenizer.vocab_size,
        **{"default_rhythm": rhythm, "default_polyphony": poly},
        **{**{k: v for k, v in spec.model.items() if k != "preset"}, **overrides},
    )
    train, valid = segments(Path(data_dir), tokenizer, config, spec.seq_len, options.max_shift)
    return seeded_run(
        MuseMorphose,
        config,
        (train, valid),
        (len(train), len(valid)),
        options.train_config(spec, out_dir),
        options.device,
        tokenizer,
        step_fn=VAEStep(config),
        collate_fn=SegmentCollator(tokenizer.pad_id),
    )
