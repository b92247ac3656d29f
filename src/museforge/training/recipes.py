"""Training recipes: a dataset folder + a model family + a preset → a configured `Trainer`.

This is where configuration stops: the CLI passes plain values, the recipe builds the tokenizer cache, the
datasets, the model config and the `TrainConfig`; models and the trainer never see CLI options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from museforge.data.dataset import (
    IGNORE_INDEX,
    RandomTransposition,
    TokenCache,
    TokenizeOptions,
    TokenWindowDataset,
    cache_dir,
    tokenize_dataset,
)
from museforge.data.musemorphose import MuseMorphoseSegments, SegmentCollator
from museforge.io import atomic_write_json
from museforge.models import build_model
from museforge.models.checkpoint import load_checkpoint
from museforge.models.musemorphose import MuseMorphoseConfig
from museforge.models.performance_rnn import (
    PerformanceRNNConfig,
    controls_for_events,
    encode_controls,
    unset_at_random,
)
from museforge.models.transformer import TransformerConfig
from museforge.tokenizers import PerformanceTokenizer, RemiTokenizer
from museforge.training.distributed import seed_everything
from museforge.training.gan import PHRASE_FILTERS, prepare_musegan
from museforge.training.trainer import TrainConfig, Trainer, TrainResult
from museforge.training.vae import VAEStep

FAMILY_TOKENIZERS = {"transformer": "remi", "performance_rnn": "performance", "musemorphose": "remi"}


@dataclass(frozen=True)
class Recipe:
    """A preset: model size, window length and the training knobs that go with them."""

    model: dict[str, Any]
    seq_len: int
    train: dict[str, Any] = field(default_factory=dict)


# Real presets train until the validation loss stops improving, not for a fixed time.
_GAN_TRAIN = {
    "lr": 1e-3,
    "beta1": 0.5,
    "beta2": 0.9,
    "warmup_steps": 0,
    "min_lr_ratio": 1.0,
    "weight_decay": 0.0,
    "grad_clip": None,
    "precision": "fp32",  # the gradient penalty differentiates a gradient: keep it in full precision
}
_GAN_PHRASES = {"min_notes_per_bar": 4.0, "min_tracks": 3, "hop_bars": 2}
_UNTIL_PLATEAU = {"epochs": 100, "patience": 3}

RECIPES: dict[str, dict[str, Recipe]] = {
    "transformer": {
        "tiny": Recipe({"preset": "tiny"}, 128, {"batch_size": 8, "lr": 1e-3, "warmup_steps": 20}),
        "small": Recipe(
            {"preset": "small"}, 512, {"batch_size": 32, "lr": 6e-4, "warmup_steps": 300, **_UNTIL_PLATEAU}
        ),
        "base": Recipe(
            {"preset": "base"}, 1024, {"batch_size": 32, "lr": 3e-4, "warmup_steps": 1000, **_UNTIL_PLATEAU}
        ),
    },
    "performance_rnn": {
        "tiny": Recipe(
            {"embed_dim": 32, "hidden_size": 64, "n_layers": 1},
            128,
            {"batch_size": 8, "lr": 1e-3, "warmup_steps": 20, "grad_clip": 3.0},
        ),
        "small": Recipe(
            {"embed_dim": 128, "hidden_size": 384, "n_layers": 2},
            512,
            {"batch_size": 32, "lr": 1e-3, "warmup_steps": 200, "grad_clip": 3.0, **_UNTIL_PLATEAU},
        ),
        # Magenta's Performance RNN: 3 × 512 LSTM, batch 64, lr 1e-3, gradient clip 3.
        "base": Recipe(
            {"embed_dim": 256, "hidden_size": 512, "n_layers": 3},
            512,
            {"batch_size": 64, "lr": 1e-3, "warmup_steps": 500, "grad_clip": 3.0, **_UNTIL_PLATEAU},
        ),
    },
    # seq_len: the longest decoder segment (longer segments are skipped). small uses 8-bar segments, as most
    # pieces of the music21 corpus are short; base is the paper's: 16 bars, batch 4, Adam 1e-4, 200 warm-up
    # steps, cosine to 5e-6 over 150k steps, clip 0.5.
    "musemorphose": {
        "tiny": Recipe({"preset": "tiny"}, 512, {"batch_size": 4, "lr": 1e-3, "warmup_steps": 10}),
        "small": Recipe(
            {"preset": "small", "n_bars": 8, "max_dec_len": 768},
            768,
            {"batch_size": 16, "lr": 3e-4, "warmup_steps": 200, "grad_clip": 0.5, **_UNTIL_PLATEAU},
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
                **_UNTIL_PLATEAU,
            },
        ),
    },
    # MuseGAN (WGAN-GP): seq_len is the phrase length in bars; grad_accum is n_critic (critic steps, one real
    # batch each, per generator step); constant lr. base is the paper's: latent 128, Adam 1e-3 betas
    # (0.5, 0.9), n_critic 5, batch 64 (λ = 10 for the gradient penalty in the trainer). Phrases need >= 3
    # sounding tracks and >= 4 notes per bar on average; best = smallest MuseGAN-metric gap to validation.
    "musegan": {
        "tiny": Recipe(
            {"g_width": 4, "d_width": 4, "latent_dim": 32, "genre_dim": 8, **_GAN_PHRASES},
            4,
            {"batch_size": 4, "grad_accum": 2, **_GAN_TRAIN},
        ),
        "small": Recipe(
            {"g_width": 16, "d_width": 16, "latent_dim": 128, "genre_dim": 32, **_GAN_PHRASES},
            4,
            {"batch_size": 32, "grad_accum": 5, **_GAN_TRAIN, "epochs": 60, "patience": 8},
        ),
        "base": Recipe(
            {"g_width": 32, "d_width": 32, "latent_dim": 128, "genre_dim": 32, **_GAN_PHRASES},
            4,
            {"batch_size": 64, "grad_accum": 5, **_GAN_TRAIN, "epochs": 200, "patience": 10},
        ),
    },
}


def recipe(model: str, preset: str) -> Recipe:
    if model not in RECIPES:
        raise ValueError(f"unknown model family {model!r}; known: {', '.join(sorted(RECIPES))}")
    if preset not in RECIPES[model]:
        raise ValueError(f"unknown preset {preset!r} for {model}; known: {', '.join(RECIPES[model])}")
    return RECIPES[model][preset]


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


def most_frequent_classes(data_dir: Path, tokenizer: RemiTokenizer) -> tuple[int, int]:
    """The training split's most frequent rhythm and polyphony classes (MuseMorphose's default plan)."""
    data = np.asarray(TokenCache(data_dir, "remi", "train").data, dtype=np.int64)
    counts = np.bincount(data, minlength=tokenizer.vocab_size)
    return (
        int(np.argmax(counts[list(tokenizer.rhythm_ids)])),
        int(np.argmax(counts[list(tokenizer.polyphony_ids)])),
    )


def _musemorphose_data(
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


@dataclass
class TrainingRun:
    """What `prepare_training` built: ready to ``trainer.fit()``."""

    trainer: Trainer
    model_config: dict[str, Any]
    train_windows: int
    valid_windows: int


def prepare_training(
    model: str,
    data_dir: Path,
    preset: str,
    out_dir: Path,
    *,
    device: torch.device | str = "cpu",
    train_overrides: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
    max_shift: int = 6,
    unset_p: float = 0.25,
    workers: int | None = None,
) -> TrainingRun:
    """Tokenize ``data_dir`` if needed, build datasets, model and trainer for ``model`` at ``preset``."""
    spec = recipe(model, preset)
    if model == "musegan":
        train_config = TrainConfig.from_dict(
            {"out_dir": str(out_dir), **spec.train, **(train_overrides or {})}
        )
        if train_config.precision != "fp32":
            raise ValueError(
                f"MuseGAN trains in fp32 (got precision {train_config.precision!r}): its gradient penalty "
                "differentiates a gradient, which reduced precision makes unreliable"
            )
        gan = prepare_musegan(
            Path(data_dir),
            {**spec.model, **(model_overrides or {})},
            train_config,
            device=device,
            n_bars=spec.seq_len,
            max_shift=max_shift,
            workers=workers,
        )
        return TrainingRun(gan.trainer, gan.model_config, gan.train_phrases, gan.valid_phrases)
    tok_name = FAMILY_TOKENIZERS[model]
    options = TokenizeOptions(progress=True)
    made = cache_dir(data_dir, tok_name) / "tokenizer.json"
    if (
        made.exists()
    ):  # keep the tokenizer the cache was made with (e.g. attribute boundaries fitted to the data)
        options.config = json.loads(made.read_text())["config"]
    if workers is not None:
        options.workers = workers
    tokenize_dataset(Path(data_dir), tok_name, options)
    tokenizer = TokenCache(data_dir, tok_name, "train").tokenizer()
    if model == "musemorphose":
        assert isinstance(tokenizer, RemiTokenizer)
        overrides = dict(model_overrides or {})
        rhythm, poly = most_frequent_classes(Path(data_dir), tokenizer)
        vae_config = MuseMorphoseConfig.preset(
            overrides.pop("preset", spec.model["preset"]),
            tokenizer.vocab_size,
            **{"default_rhythm": rhythm, "default_polyphony": poly},
            **{**{k: v for k, v in spec.model.items() if k != "preset"}, **overrides},
        )
        vae_train, vae_valid = _musemorphose_data(
            Path(data_dir), tokenizer, vae_config, spec.seq_len, max_shift
        )
        train_config = TrainConfig.from_dict(
            {"out_dir": str(out_dir), **spec.train, **(train_overrides or {})}
        )
        seed_everything(train_config.seed)  # the run's seed fixes the initial weights too
        net = build_model(vae_config).to(device)
        trainer = Trainer(
            net,
            vae_train,
            train_config,
            eval_data=vae_valid if len(vae_valid) else None,
            step_fn=VAEStep(vae_config),
            collate_fn=SegmentCollator(tokenizer.pad_id),
            tokenizer=tokenizer.state_dict(),
        )
        return TrainingRun(trainer, vae_config.to_dict(), len(vae_train), len(vae_valid))
    augment = RandomTransposition(tokenizer, max_shift) if max_shift > 0 else None
    pad = int(getattr(tokenizer, "pad_id", 0))
    train = TokenWindowDataset(
        data_dir, tok_name, "train", spec.seq_len, stride=spec.seq_len // 2, pad_id=pad, augment=augment
    )
    valid = TokenWindowDataset(data_dir, tok_name, "valid", spec.seq_len, pad_id=pad)
    if len(train) == 0:
        raise ValueError(f"{data_dir} has no training pieces for {tok_name}")

    overrides = dict(model_overrides or {})
    if model == "transformer":
        size = overrides.pop("preset", spec.model["preset"])
        # RoPE does not extrapolate: positions past the training window score 3-7x worse (measured on the
        # shipped model), so the model's context is the window it trains on and generation slides within it.
        context = overrides.pop("max_seq_len", spec.seq_len)
        if context != spec.seq_len:
            raise ValueError(
                f"max_seq_len {context} differs from the training window {spec.seq_len}: a Transformer only "
                "handles positions it was trained on"
            )
        config: Any = TransformerConfig.preset(size, tokenizer.vocab_size, max_seq_len=context, **overrides)
        train_data: Dataset = train
        valid_data: Dataset = valid
    else:
        assert isinstance(tokenizer, PerformanceTokenizer)
        config = PerformanceRNNConfig(vocab_size=tokenizer.vocab_size, **{**spec.model, **overrides})
        train_data = PerformanceControlWindows(train, tokenizer, unset_p=unset_p)
        valid_data = PerformanceControlWindows(valid, tokenizer)

    train_config = TrainConfig.from_dict({"out_dir": str(out_dir), **spec.train, **(train_overrides or {})})
    seed_everything(train_config.seed)  # the run's seed fixes the initial weights too
    net = build_model(config).to(device)
    trainer = Trainer(
        net,
        train_data,
        train_config,
        eval_data=valid_data if len(valid) else None,
        tokenizer=tokenizer.state_dict(),
    )
    return TrainingRun(trainer, config.to_dict(), len(train), len(valid))


RUN_FILE = "run.json"


# Model-config fields a recipe takes from the data, its tokenizer or its training window, never from --init.
DATA_FIELDS: dict[str, frozenset[str]] = {
    "transformer": frozenset({"model", "vocab_size", "max_seq_len"}),
    "performance_rnn": frozenset({"model", "vocab_size"}),
    "musemorphose": frozenset({"model", "vocab_size", "default_rhythm", "default_polyphony"}),
    "musegan": frozenset({"model", "n_tracks", "n_bars", "steps_per_bar", "n_pitches", "genres"}),
}


# Fields that describe the training data, not the network: a fine-tuned model takes them from its new data.
DATA_STATISTICS = frozenset({"default_rhythm", "default_polyphony"})


def inherited_config(model: str, checkpoint_config: dict[str, Any]) -> dict[str, Any]:
    """The model-config fields a run started from a checkpoint keeps from it: all but `DATA_FIELDS`, so
    fine-tuning a model keeps its size and options without the user repeating them."""
    return {k: v for k, v in checkpoint_config.items() if k not in DATA_FIELDS[model]}


def start_run(
    model: str,
    data_dir: Path,
    preset: str,
    out_dir: Path,
    *,
    device: str = "cpu",
    train_overrides: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
    max_shift: int = 6,
    unset_p: float = 0.25,
    init_from: Path | None = None,
) -> TrainResult:
    """Train a new run, recording the request in ``out_dir/run.json`` so `resume_run` can rebuild it.

    ``init_from`` starts from a checkpoint's weights instead of a random init: fine-tuning, or continuing a run
    whose optimizer state is gone, with a fresh optimizer and schedule (a MuseMorphose's β cycle goes on from
    the checkpoint's step, recorded as ``init_step``). The model is then the checkpoint's (its config, recorded
    as ``init_config``, replaces the preset's model; the preset still gives the training recipe), changed only
    by ``model_overrides``, e.g. a MuseGAN given binary neurons; weights the overrides add start fresh and are
    listed in run.json as ``init_fresh``. Fields the data decides (vocabulary, tracks, genres) must agree.
    """
    if (out_dir / "last").exists():
        raise ValueError(f"{out_dir} already holds a run: resume it, or choose another --out")
    request = {
        "model": model,
        "data_dir": str(data_dir),
        "preset": preset,
        "max_shift": max_shift,
        "unset_p": unset_p,
        "train_overrides": train_overrides or {},
        "model_overrides": model_overrides or {},
        "init_from": str(init_from) if init_from is not None else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / RUN_FILE, request)
    return _run(request, out_dir, device, resume=False)


def resume_run(out_dir: Path, *, device: str = "cpu", max_steps: int | None = None) -> TrainResult:
    """Continue a run exactly where its last checkpoint left it (optionally to a new ``max_steps``)."""
    path = out_dir / RUN_FILE
    if not path.exists():
        raise ValueError(f"{out_dir} is not a museforge training run (no {RUN_FILE})")
    if not (out_dir / "last").exists():
        raise ValueError(f"{out_dir} has no checkpoint to resume from yet")
    request = json.loads(path.read_text())
    if max_steps is not None:
        request["train_overrides"]["max_steps"] = max_steps
    return _run(request, out_dir, device, resume=True)


def _run(request: dict[str, Any], out_dir: Path, device: str, resume: bool) -> TrainResult:
    source = load_checkpoint(request["init_from"]) if request.get("init_from") and not resume else None
    source_config = source.config.to_dict() if source is not None else {}
    if source is not None:
        request["init_config"] = inherited_config(request["model"], source_config)
    run = prepare_training(
        request["model"],
        Path(request["data_dir"]),
        request["preset"],
        out_dir,
        device=device,
        train_overrides=request["train_overrides"],
        model_overrides={**request.get("init_config", {}), **request["model_overrides"]},
        max_shift=request["max_shift"],
        unset_p=request["unset_p"],
    )
    if source is not None:
        overrides = {k: v for k, v in request["model_overrides"].items() if k not in PHRASE_FILTERS}
        expected = {**source_config, **overrides}  # phrase filters choose the data, not the model
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
            missing, unexpected = run.trainer.model.load_state_dict(source.model.state_dict(), strict=False)
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
    if isinstance(run.trainer.step_fn, VAEStep):
        run.trainer.step_fn.step_offset = request.get("init_step", 0)
    return run.trainer.fit(resume=resume)
