"""Training a MuseGAN: its presets and the fp32 rule of its gradient penalty; `prepare_musegan` builds the
phrases, the model and the `GANTrainer`."""

from __future__ import annotations

from pathlib import Path

from museforge.families.musegan.gan import PHRASE_FILTERS, prepare_musegan
from museforge.training.recipes import Recipe, RunOptions, TrainingRun

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

# WGAN-GP: seq_len is the phrase length in bars; grad_accum is n_critic (critic steps, one real batch each, per
# generator step); constant lr. base is the paper's: latent 128, Adam 1e-3 betas (0.5, 0.9), n_critic 5, batch
# 64 (λ = 10 for the gradient penalty in the trainer). Phrases need >= 3 sounding tracks and >= 4 notes per bar
# on average; best = smallest MuseGAN-metric gap to validation.
PRESETS: dict[str, Recipe] = {
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
}

# Model-config fields the recipe takes from the data (its piano-roll layout and styles), never from --init.
DATA_FIELDS = frozenset({"model", "n_tracks", "n_bars", "steps_per_bar", "n_pitches", "genres"})

# Model overrides that choose the training phrases, not the model.
DATA_FILTERS = frozenset(PHRASE_FILTERS)


def prepare(spec: Recipe, data_dir: Path, out_dir: Path, options: RunOptions) -> TrainingRun:
    """Refuses any precision but fp32, then `prepare_musegan` with phrases of ``spec.seq_len`` bars."""
    train_config = options.train_config(spec, out_dir)
    if train_config.precision != "fp32":
        raise ValueError(
            f"MuseGAN trains in fp32 (got precision {train_config.precision!r}): its gradient penalty "
            "differentiates a gradient, which reduced precision makes unreliable"
        )
    gan = prepare_musegan(
        Path(data_dir),
        {**spec.model, **options.model_overrides},
        train_config,
        device=options.device,
        n_bars=spec.seq_len,
        max_shift=options.max_shift,
        workers=options.workers,
    )
    return TrainingRun(gan.trainer, gan.model_config, gan.train_phrases, gan.valid_phrases)
