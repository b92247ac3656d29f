"""The registry: the four families in the order the app lists them, and lookups by any spelling of a name."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from museforge.families import musegan, musemorphose, performance, remi
from museforge.families.base import Family

if TYPE_CHECKING:
    import torch
    from torch import nn

    from museforge.families.loaded import LoadedModel
    from museforge.models.checkpoint import Checkpoint
    from museforge.models.config import ModelConfig

FAMILIES: tuple[Family, ...] = (remi.FAMILY, performance.FAMILY, musemorphose.FAMILY, musegan.FAMILY)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


_BY_NAME = {
    _key(n): f for f in FAMILIES for n in (f.name, f.checkpoint_model, f.label.replace(" ", "_"), *f.aliases)
}


def get_family(name: str) -> Family:
    """The family called ``name`` in any of its spellings (``performance_rnn``, ``performance-rnn``, ...), or
    the family of checkpoints whose config names ``name``."""
    found = _BY_NAME.get(_key(name))
    if found is None:
        raise ValueError(f"unknown model family {name!r}; families: {', '.join(f.name for f in FAMILIES)}")
    return found


def family_names() -> list[str]:
    return [f.name for f in FAMILIES]


def family_of(loaded: LoadedModel) -> Family:
    """The family of a loaded model."""
    return get_family(loaded.checkpoint.model_name)


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """A freshly initialised model for a config or its dict (``{"model": name, ...fields}``)."""
    if isinstance(config, dict):
        name = config.get("model")
        if not isinstance(name, str):
            raise ValueError(f"a model config names its model ('model'), got {name!r}")
        cls = get_family(name).model_class()
        return cls(cls.config_class.from_dict(config))
    return get_family(config.model_name).model_class()(config)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """The model of a checkpoint folder on ``device`` in eval mode, with everything saved beside it: the one
    way to load any family's checkpoint (`museforge.models.checkpoint` is the format)."""
    from museforge.models.checkpoint import read_checkpoint

    return read_checkpoint(path, build_model, device)


__all__ = [
    "FAMILIES",
    "build_model",
    "family_names",
    "family_of",
    "get_family",
    "load_checkpoint",
]
