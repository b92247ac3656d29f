"""Shipped models: where they live and how a name on the command line or in the web app becomes a checkpoint.

A shipped model is a checkpoint directory (see `museforge.models.checkpoint`) under `models_dir()` with a
``MODEL_CARD.md`` whose first line describes it, and optionally an ``originality.npz`` index of its training data.
Everything `list_models` shows is read from the files (the weights' header, ``config.json``,
``tokenizer.json``) without building the model or importing torch, so listing stays fast however large the
models are.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import museforge
from museforge.machine import var_dir
from museforge.models.checkpoint_files import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, CheckpointError
from museforge.models.versions import Registry

MODELS_DIR_ENV = "MUSEFORGE_MODELS_DIR"
CARD_FILE = "MODEL_CARD.md"
ORIGINALITY_FILE = "originality.npz"
# Checkpoint metrics that hold the validation negative log-likelihood per token, most specific first.
NLL_KEYS = ("valid_nll", "eval_nll", "best_eval_loss", "eval_loss")
MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit on a header


class ModelNotFoundError(ValueError):
    """A model name or path that names no checkpoint; the message lists the models that exist."""


@dataclass
class ModelInfo:
    """One row of `list_models`."""

    name: str
    family: str
    path: Path
    parameters: int
    step: int
    valid_nll: float | None
    styles: list[str]
    size_mb: float
    description: str
    tracks: list[str] = field(default_factory=list)  # a piano-roll model's tracks, in roll order
    multi_track: bool = False  # a token model that keeps parts apart (REMI with Program tokens)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


def models_dir() -> Path:
    """``$MUSEFORGE_MODELS_DIR`` if set, else the ``models/`` folder of the repository this package runs from."""
    env = os.environ.get(MODELS_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise ModelNotFoundError(f"{MODELS_DIR_ENV}={env} is not a directory")
        return path
    # src/museforge/__init__.py -> the repository root, for the editable install `make` does
    root = Path(museforge.__file__).resolve().parents[2]
    path = root / "models"
    if not path.is_dir():
        raise ModelNotFoundError(
            f"no shipped models folder at {path} (museforge is not running from its repository); "
            f"set {MODELS_DIR_ENV} to a folder of model checkpoints or pass a checkpoint directory"
        )
    return path


def _is_checkpoint(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def _shipped_dirs() -> list[Path]:
    return sorted(p for p in models_dir().iterdir() if p.is_dir() and _is_checkpoint(p))


def model_names() -> list[str]:
    """Names of the shipped models (directory names under `models_dir`)."""
    return [p.name for p in _shipped_dirs()]


def _spelling(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def resolve_model(name_or_path: str | Path) -> Path:
    """The checkpoint directory for a shipped model name (its production version) or a checkpoint directory."""
    return locate_model(name_or_path)[0]


def locate_model(name_or_path: str | Path) -> tuple[Path, str, int | None]:
    """The checkpoint directory, the model's name and the registry version serving it: a shipped name gives its
    production version (see `museforge.models.versions`); a directory given by path is itself, unversioned."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not _is_checkpoint(path):
            raise ModelNotFoundError(f"{path} is not a model checkpoint (no {CONFIG_FILE} or {WEIGHTS_FILE})")
        return path, path.name, None
    name = str(name_or_path)
    try:
        known = model_names()
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"unknown model {name!r} and no shipped models to choose from: {exc}"
        ) from exc
    spelled = {_spelling(k): k for k in known}  # remi_transformer, Remi-Transformer: one model
    if _spelling(name) in spelled:
        shipped = spelled[_spelling(name)]
        serving = registry().serving(shipped)
        return (models_dir() / shipped, shipped, 1) if serving is None else (serving[0], shipped, serving[1])
    listing = ", ".join(known) if known else f"none in {models_dir()}"
    raise ModelNotFoundError(
        f"unknown model {name!r}; shipped models: {listing}; or pass a checkpoint directory"
    )


def registry() -> Registry:
    """The versions the lab made (``$MUSEFORGE_VAR_DIR/resource/registry``) over the shipped models."""
    return Registry(var_dir() / "resource" / "registry", models_dir())


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"cannot read {path}: {exc}") from exc


def _parameters(weights: Path) -> int:
    """Parameter count from the safetensors header (tied matrices are stored once, as the model counts them).

    The header is read by hand (8 bytes of little-endian length, then JSON): safetensors' reader for torch
    tensors would import torch, a second of every `museforge models list`.
    """
    try:
        with weights.open("rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            if length > MAX_HEADER_BYTES:
                raise ValueError(f"a header of {length} bytes")
            header = json.loads(fh.read(length))
        return sum(math.prod(entry["shape"]) for key, entry in header.items() if key != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, AttributeError, struct.error) as exc:
        raise CheckpointError(f"{weights} is unreadable ({exc})") from exc


def _valid_nll(metrics: dict[str, Any]) -> float | None:
    for key in NLL_KEYS:
        value = metrics.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            return float(value)
    return None


def _description(path: Path) -> str:
    card = path / CARD_FILE
    if not card.is_file():
        return ""
    for line in card.read_text(encoding="utf-8").splitlines():
        if line.strip():
            return line.strip().lstrip("#").strip()
    return ""


def _track_names(config: dict[str, Any], path: Path) -> list[str]:
    """A piano roll's track names as its tokenizer.json lists them (LPD-5's where it lists none), read without
    building the tokenizer: numpy and symusic would double the time of `museforge models list`."""
    if "tracks" not in config:
        from museforge.tokenizers.pianoroll import LPD5_TRACKS

        return [t.name for t in LPD5_TRACKS]
    try:
        return [str(t["name"]) for t in config["tracks"]]
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / TOKENIZER_FILE}: a track without a name ({exc!r})") from exc


def model_info(path: str | Path, name: str | None = None) -> ModelInfo:
    """What a checkpoint directory holds, read from its files without building the model."""
    path = Path(path)
    meta = _read_json(path / CONFIG_FILE)
    tokenizer = _read_json(path / TOKENIZER_FILE) if (path / TOKENIZER_FILE).is_file() else {}
    styles = tokenizer.get("config", {}).get("styles", []) if tokenizer.get("name") == "remi" else []
    tracks: list[str] = []
    if tokenizer.get("name") == "pianoroll":  # a MuseGAN: its genres are its styles, its roll has tracks
        styles = meta.get("config", {}).get("genres", [])
        tracks = _track_names(tokenizer.get("config", {}), path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return ModelInfo(
        name=name or path.name,
        family=str(meta.get("model", "?")),
        path=path,
        parameters=_parameters(path / WEIGHTS_FILE),
        step=int(meta.get("step", 0)),
        valid_nll=_valid_nll(meta.get("metrics", {})),
        styles=list(styles),
        size_mb=size / 2**20,
        description=_description(path),
        tracks=tracks,
        multi_track=bool(tokenizer.get("config", {}).get("use_programs", False)),
    )


def list_models() -> list[ModelInfo]:
    """Every shipped model, sorted by name."""
    return [model_info(p) for p in _shipped_dirs()]


__all__ = [
    "MODELS_DIR_ENV",
    "ModelInfo",
    "ModelNotFoundError",
    "list_models",
    "locate_model",
    "model_info",
    "model_names",
    "models_dir",
    "registry",
    "resolve_model",
]
