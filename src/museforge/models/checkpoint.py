"""The one checkpoint format of every model family.

A checkpoint is a directory::

    model.safetensors     weights (a tied matrix is stored once)
    config.json           {"format": 1, "model": name, "config": {...}, "step", "metrics", "created",
                           "museforge_version"}
    tokenizer.json        the tokenizer's own saved JSON, so a checkpoint alone can encode and decode
    training_state.pt     optional: optimizer, scheduler, RNG and data position, for exact resume

It is written to a temporary sibling directory and renamed into place, so a crash never leaves a half
checkpoint where a good one was. Reading one needs the model's class, which its family knows:
`museforge.families.load_checkpoint` is the one way to load any checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch
from torch import nn

import museforge
from museforge.models.checkpoint_files import (
    CONFIG_FILE,
    TOKENIZER_FILE,
    TRAINING_STATE_FILE,
    WEIGHTS_FILE,
    CheckpointError,
)
from museforge.models.config import ModelConfig

FORMAT_VERSION = 1
# A fresh model for a config dict (``{"model": name, ...fields}``); its ``config`` is the parsed config.
ModelBuilder = Callable[[dict[str, Any]], nn.Module]


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns: a ready model (eval mode) and everything saved beside it."""

    path: Path
    model: nn.Module
    config: ModelConfig
    model_name: str
    tokenizer: dict[str, Any]
    step: int
    metrics: dict[str, Any]
    created: str
    museforge_version: str


def _weights(module: nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor of ``module`` once, as its own contiguous CPU copy.

    A tied matrix (one tensor under two names) is stored under its first name; loading restores the tie.
    Views into one shared buffer — cuDNN packs an LSTM's weights into a single allocation on CUDA — are copied
    out, since safetensors refuses to store overlapping views.
    """
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, torch.dtype, tuple[int, ...], tuple[int, ...]]] = set()
    for name, tensor in module.state_dict().items():
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()))
        if key in seen:
            continue
        seen.add(key)
        out[name] = tensor.detach().to("cpu", copy=True).contiguous()
    return out


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    tokenizer: dict[str, Any],
    step: int,
    metrics: dict[str, Any],
    training_state: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (unwrapped from DDP if needed) with its tokenizer JSON, step and metrics to ``path``,
    replacing an existing checkpoint there atomically."""
    if not isinstance(tokenizer, dict):
        raise ValueError(
            f"tokenizer must be the tokenizer's saved JSON as a dict, got {type(tokenizer).__name__}"
        )
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    inner = getattr(model, "module", model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": FORMAT_VERSION,
        "model": inner.config.model_name,
        "config": inner.config.to_dict(),
        "step": int(step),
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "museforge_version": museforge.__version__,
    }
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        safetensors.torch.save_file(_weights(inner), str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        (tmp / TOKENIZER_FILE).write_text(
            json.dumps(tokenizer, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        if training_state is not None:
            torch.save(training_state, tmp / TRAINING_STATE_FILE)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, old / "ckpt")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path.parent} has no {path.name} ({what})")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {path.parent}: {path.name} is not valid JSON ({exc})") from exc


def read_checkpoint(path: str | Path, build: ModelBuilder, device: str | torch.device = "cpu") -> Checkpoint:
    """Rebuild the model of a checkpoint with ``build`` on ``device`` in eval mode, with its config, tokenizer
    JSON, step and metrics."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint directory at {path}")
    meta = _read_json(path / CONFIG_FILE, "model config")
    tokenizer = _read_json(path / TOKENIZER_FILE, "tokenizer")
    missing = [k for k in ("format", "model", "config", "step", "metrics") if k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path}: {CONFIG_FILE} lacks {', '.join(missing)}")
    if meta["format"] != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} has format {meta['format']}; this museforge reads {FORMAT_VERSION}"
        )
    try:
        model = build({**meta["config"], "model": meta["model"]})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: bad model config ({exc})") from exc
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {path} has no {WEIGHTS_FILE}")
    try:
        missing_keys, unexpected = safetensors.torch.load_model(
            model, str(weights), strict=False, device="cpu"
        )
    except (safetensors.SafetensorError, OSError) as exc:
        raise CheckpointError(f"checkpoint {path}: {WEIGHTS_FILE} is unreadable ({exc})") from exc
    except RuntimeError as exc:  # shape mismatch between the stored tensors and the config's model
        raise CheckpointError(f"checkpoint {path}: weights do not match the config ({exc})") from exc
    if missing_keys or unexpected:
        raise CheckpointError(
            f"checkpoint {path}: weights do not match the config (missing {sorted(missing_keys)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    model.to(device).eval()
    return Checkpoint(
        path=path,
        model=model,
        config=model.config,
        model_name=meta["model"],
        tokenizer=tokenizer,
        step=int(meta["step"]),
        metrics=meta["metrics"],
        created=meta.get("created", ""),
        museforge_version=meta.get("museforge_version", ""),
    )


def load_training_state(path: str | Path) -> dict[str, Any]:
    """The optimizer/scheduler/RNG/data-position state saved with a checkpoint (for exact resume)."""
    file = Path(path) / TRAINING_STATE_FILE
    if not file.is_file():
        raise CheckpointError(f"checkpoint {path} has no {TRAINING_STATE_FILE}; it cannot be resumed")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}: {TRAINING_STATE_FILE} is unreadable ({exc})") from exc
