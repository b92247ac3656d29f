"""Training a REMI Transformer: its presets, and token windows of the REMI cache for a decoder-only model."""

from __future__ import annotations

from pathlib import Path

from museforge.data.dataset import FillInTheMiddle, FillTrack, chained
from museforge.families.remi.model import TransformerConfig, TransformerLM
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
    "tiny": Recipe({"preset": "tiny"}, 128, {"batch_size": 8, "lr": 1e-3, "warmup_steps": 20}),
    "small": Recipe(
        {"preset": "small"}, 512, {"batch_size": 32, "lr": 6e-4, "warmup_steps": 300, **UNTIL_PLATEAU}
    ),
    "base": Recipe(
        {"preset": "base"}, 1024, {"batch_size": 32, "lr": 3e-4, "warmup_steps": 1000, **UNTIL_PLATEAU}
    ),
}

# Model-config fields the recipe takes from the data, its tokenizer or its training window, never from --init.
DATA_FIELDS = frozenset({"model", "vocab_size", "max_seq_len"})


def prepare(
    spec: Recipe, data_dir: Path, out_dir: Path, options: RunOptions, tokenizer_name: str
) -> TrainingRun:
    """Tokenize ``data_dir`` if needed; windows of ``spec.seq_len`` tokens, which is also the model's context."""
    tokenizer = tokenized(data_dir, tokenizer_name, options.workers)
    train, valid = token_windows(data_dir, tokenizer_name, tokenizer, spec.seq_len, options.max_shift)
    if options.infill > 0:  # the fill tokens sit past the cache's ids, so the cache serves both kinds of run
        tokenizer = tokenizer.with_fill_tokens()
        fills = [FillInTheMiddle(tokenizer, options.infill)]
        if tokenizer.config.use_programs:  # half the filled windows fill a voice instead of bars
            fills = [FillInTheMiddle(tokenizer, options.infill / 2), FillTrack(tokenizer, options.infill / 2)]
        train.augment = chained(train.augment, *fills)
    overrides = dict(options.model_overrides)
    size = overrides.pop("preset", spec.model["preset"])
    # RoPE does not extrapolate: positions past the training window score 3-7x worse (measured on the
    # shipped model), so the model's context is the window it trains on and generation slides within it.
    context = overrides.pop("max_seq_len", spec.seq_len)
    if context != spec.seq_len:
        raise ValueError(
            f"max_seq_len {context} differs from the training window {spec.seq_len}: a Transformer only "
            "handles positions it was trained on"
        )
    config = TransformerConfig.preset(size, tokenizer.vocab_size, max_seq_len=context, **overrides)
    train_config = options.train_config(spec, out_dir)
    return seeded_run(
        TransformerLM,
        config,
        (train, valid),
        (len(train), len(valid)),
        train_config,
        options.device,
        tokenizer,
    )
