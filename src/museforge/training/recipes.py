"""What every family's training recipe shares: presets, the options a run passes them, the token windows and
trainer they build, and run.json's fine-tuning checks.

This is where configuration stops: the CLI passes plain values, a family's recipe (``families/<name>/train.py``)
builds the tokenizer cache, the datasets, the model config and the `TrainConfig` with these helpers; models and
the trainer never see CLI options. Nothing here knows a family by name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from museforge.data.dataset import (
    RandomTransposition,
    TokenCache,
    TokenizeOptions,
    TokenWindowDataset,
    cache_dir,
    tokenize_dataset,
)
from museforge.io import atomic_write_json
from museforge.models.checkpoint import Checkpoint
from museforge.tokenizers.base import Tokenizer, TokenTokenizer
from museforge.tokenizers.registry import load_tokenizer_state
from museforge.training.distributed import seed_everything
from museforge.training.trainer import TrainConfig, Trainer


@dataclass(frozen=True)
class Recipe:
    """A preset: model size, window length and the training knobs that go with them."""

    model: dict[str, Any]
    seq_len: int
    train: dict[str, Any] = field(default_factory=dict)


# Real presets train until the validation loss stops improving, not for a fixed time.
UNTIL_PLATEAU = {"epochs": 100, "patience": 3}


@dataclass(frozen=True)
class RunOptions:
    """What a run asks of a family's recipe besides the data, the preset and the run folder."""

    device: torch.device | str = "cpu"
    train_overrides: dict[str, Any] = field(default_factory=dict)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    max_shift: int = 6  # random transposition of training windows, ± semitones
    unset_p: float = 0.25  # the chance each control of a window is left unset (the Performance RNN's)
    infill: float = 0.0  # the share of windows rearranged to fill in the middle (a family that can, REMI)
    workers: int | None = None  # tokenizer processes

    def train_config(self, spec: Recipe, out_dir: Path) -> TrainConfig:
        """The preset's training knobs with this run's overrides."""
        return TrainConfig.from_dict({"out_dir": str(out_dir), **spec.train, **self.train_overrides})


@dataclass
class TrainingRun:
    """What a family's `prepare_training` built: ready to ``trainer.fit()``."""

    trainer: Trainer
    model_config: dict[str, Any]
    train_windows: int
    valid_windows: int


def tokenized(data_dir: Path, tokenizer_name: str, workers: int | None = None) -> Tokenizer:
    """Tokenize ``data_dir`` with ``tokenizer_name`` if not done yet, and the tokenizer its cache was made with."""
    options = TokenizeOptions(progress=True)
    made = cache_dir(data_dir, tokenizer_name) / "tokenizer.json"
    if (
        made.exists()
    ):  # keep the tokenizer the cache was made with (e.g. attribute boundaries fitted to the data)
        options.config = json.loads(made.read_text())["config"]
    if workers is not None:
        options.workers = workers
    tokenize_dataset(Path(data_dir), tokenizer_name, options)
    return TokenCache(data_dir, tokenizer_name, "train").tokenizer()


def token_windows(
    data_dir: Path, tokenizer_name: str, tokenizer: Tokenizer, seq_len: int, max_shift: int
) -> tuple[TokenWindowDataset, TokenWindowDataset]:
    """Training windows every half window (transposed at random), validation windows end to end."""
    augment = RandomTransposition(tokenizer, max_shift) if max_shift > 0 else None
    pad = int(getattr(tokenizer, "pad_id", 0))
    train = TokenWindowDataset(
        data_dir, tokenizer_name, "train", seq_len, stride=seq_len // 2, pad_id=pad, augment=augment
    )
    valid = TokenWindowDataset(data_dir, tokenizer_name, "valid", seq_len, pad_id=pad)
    if len(train) == 0:
        raise ValueError(f"{data_dir} has no training pieces for {tokenizer_name}")
    return train, valid


def seeded_run(
    model_class: Callable[[Any], nn.Module],
    config: Any,
    data: tuple[Dataset, Dataset],
    sizes: tuple[int, int],
    train_config: TrainConfig,
    device: torch.device | str,
    tokenizer: Tokenizer,
    **trainer_options: Any,
) -> TrainingRun:
    """``model_class(config)``, initialised from the run's seed, and its `Trainer` over ``data`` (train, valid),
    of ``sizes`` windows; an empty validation set is no evaluation."""
    seed_everything(train_config.seed)  # the run's seed fixes the initial weights too
    net = model_class(config).to(device)
    trainer = Trainer(
        net,
        data[0],
        train_config,
        eval_data=data[1] if sizes[1] else None,
        tokenizer=tokenizer.state_dict(),
        **trainer_options,
    )
    return TrainingRun(trainer, config.to_dict(), *sizes)


RUN_FILE = "run.json"

# Fields that describe the training data, not the network: a fine-tuned model takes them from its new data.
DATA_STATISTICS = frozenset({"default_rhythm", "default_polyphony"})


def inherited_config(checkpoint_config: dict[str, Any], data_fields: frozenset[str]) -> dict[str, Any]:
    """The model-config fields a run started from a checkpoint keeps from it: all but the family's
    ``data_fields``, so fine-tuning a model keeps its size and options without the user repeating them."""
    return {k: v for k, v in checkpoint_config.items() if k not in data_fields}


def read_run(out_dir: Path, max_steps: int | None = None) -> dict[str, Any]:
    """The request a run folder recorded, to resume it (optionally to a new ``max_steps``)."""
    path = out_dir / RUN_FILE
    if not path.exists():
        raise ValueError(f"{out_dir} is not a museforge training run (no {RUN_FILE})")
    if not (out_dir / "last").exists():
        raise ValueError(f"{out_dir} has no checkpoint to resume from yet")
    request = json.loads(path.read_text())
    if max_steps is not None:
        request["train_overrides"]["max_steps"] = max_steps
    return request


def grown_rows(source: dict[str, Tensor], target: dict[str, Tensor]) -> dict[str, Tensor]:
    """``source``'s weights, each that ``target`` holds with more rows (a vocabulary with tokens appended: its
    embedding and output rows) grown to that size: the old rows kept, the new ones their mean, so a new token
    starts as an average token rather than noise."""
    out = dict(source)
    for name, weight in source.items():
        want = target.get(name)
        if want is None or want.shape == weight.shape or want.shape[1:] != weight.shape[1:]:
            continue
        if want.shape[0] > weight.shape[0]:
            extra = weight.mean(0, keepdim=True).expand(want.shape[0] - weight.shape[0], *weight.shape[1:])
            out[name] = torch.cat([weight, extra])
    return out


def renamed_rows(
    source: dict[str, Tensor], target: dict[str, Tensor], old: list[str], new: list[str]
) -> dict[str, Tensor]:
    """``source``'s weights moved to another vocabulary: each weight with one row per token of ``old`` (its
    embedding and output rows) gets one row per token of ``new``, the row of a token both name copied and a
    new token's the mean row, as in `grown_rows`. A model so moves to a tokenization that adds tokens between
    the old ones (REMI with Program tokens, say) without forgetting the tokens it knows."""
    at = {name: i for i, name in enumerate(old)}
    kept = torch.tensor(
        [(j, at[name]) for j, name in enumerate(new) if name in at], dtype=torch.long
    )  # [k, 2]
    out = dict(source)
    for name, weight in source.items():
        want = target.get(name)
        if want is None or weight.shape[0] != len(old) or want.shape != (len(new), *weight.shape[1:]):
            continue
        moved = weight.mean(0, keepdim=True).repeat(len(new), *([1] * (weight.dim() - 1)))
        moved[kept[:, 0]] = weight[kept[:, 1]]
        out[name] = moved
    return out


def _vocabularies(source: Checkpoint, run: TrainingRun) -> tuple[list[str], list[str]] | None:
    """(the checkpoint's token names, the run's) when both are known and differ other than by tokens appended
    (`grown_rows` handles those), else None."""
    if not source.tokenizer or not run.trainer.tokenizer:
        return None
    old = load_tokenizer_state(source.tokenizer)
    new = load_tokenizer_state(run.trainer.tokenizer)
    if not isinstance(old, TokenTokenizer) or not isinstance(new, TokenTokenizer):
        return None
    old_names, new_names = old.token_names(), new.token_names()
    if old_names is None or new_names is None or new_names[: len(old_names)] == old_names:
        return None
    return old_names, new_names


def start_from(
    run: TrainingRun,
    request: dict[str, Any],
    source: Checkpoint,
    out_dir: Path,
    data_filters: frozenset[str] = frozenset(),
) -> None:
    """Load ``source``'s weights into the run's model, refusing a model the run does not build; records the
    checkpoint's step and the weights the overrides add (which start fresh) in run.json.

    ``data_filters`` are model overrides that choose the training data, not the model (a MuseGAN's phrase
    filters): they are not compared with the checkpoint's config."""
    overrides = {k: v for k, v in request["model_overrides"].items() if k not in data_filters}
    expected = {**source.config.to_dict(), **overrides}
    vocabularies = _vocabularies(source, run)
    if vocabularies is not None:  # a tokenization with other tokens: rows follow the names (`renamed_rows`)
        expected["vocab_size"] = run.model_config["vocab_size"]
    elif request.get("infill") and run.model_config.get("vocab_size", 0) > expected.get("vocab_size", 0):
        expected["vocab_size"] = run.model_config["vocab_size"]  # fill tokens appended: see `grown_rows`
    differ = ", ".join(
        f"{k}: {expected.get(k)!r} there, {run.model_config.get(k)!r} here"
        for k in sorted((set(expected) | set(run.model_config)) - DATA_STATISTICS)
        if expected.get(k) != run.model_config.get(k)
    )
    if differ:
        raise ValueError(
            f"{request['init_from']} holds a different model than this run builds ({differ}): these come "
            "from the data (its tokenizer, tracks or styles) or the preset's training window: fine-tune on data "
            "built like the checkpoint's, with its preset"
        )
    try:
        mine = run.trainer.model.state_dict()
        if vocabularies is not None:
            weights = renamed_rows(source.model.state_dict(), mine, *vocabularies)
        else:
            weights = grown_rows(source.model.state_dict(), mine)
        missing, unexpected = run.trainer.model.load_state_dict(weights, strict=False)
    except RuntimeError as exc:
        raise ValueError(
            f"{request['init_from']} holds a different model: its weights do not fit the shapes that the "
            f"model overrides {request['model_overrides']} make ({str(exc).splitlines()[-1].strip()})"
        ) from exc
    if unexpected:
        raise ValueError(
            f"{request['init_from']} holds weights this run's model has no place for: {', '.join(unexpected)}"
        )
    request["init_step"] = source.step  # read once here, recorded for `resume_run`
    if missing:  # modules the overrides add (e.g. a MuseGAN critic's feature streams) start fresh
        request["init_fresh"] = sorted(missing)
    atomic_write_json(out_dir / RUN_FILE, request)
