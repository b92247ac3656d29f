"""The registry of model families: each by name, and one way to build any of them from a config or its dict."""

from __future__ import annotations

from typing import Any

from torch import nn

from museforge.models.config import ModelConfig
from museforge.models.musegan import MuseGAN
from museforge.models.musemorphose import MuseMorphose
from museforge.models.performance_rnn import PerformanceRNN
from museforge.models.transformer import TransformerLM

MODELS: dict[str, type[nn.Module]] = {
    "transformer": TransformerLM,
    "performance_rnn": PerformanceRNN,
    "musemorphose": MuseMorphose,
    "musegan": MuseGAN,
}


def config_from_dict(data: dict[str, Any]) -> ModelConfig:
    """The config a ``config.to_dict()`` came from; ``data["model"]`` names the family."""
    name = data.get("model")
    if name not in MODELS:
        raise ValueError(f"config 'model' must be one of {sorted(MODELS)}, got {name!r}")
    return MODELS[name].config_class.from_dict(data)


def model_name(model: nn.Module) -> str:
    """Registry name of a model instance (unwrapping DDP/compile wrappers)."""
    inner = getattr(model, "module", model)
    for name, cls in MODELS.items():
        if isinstance(inner, cls):
            return name
    raise ValueError(f"{type(inner).__name__} is not a registered model; known: {sorted(MODELS)}")


def build_model(config: ModelConfig | dict[str, Any]) -> nn.Module:
    """A freshly initialised model for a config object or its dict (``{"model": name, ...fields}``)."""
    if isinstance(config, dict):
        config = config_from_dict(config)
    for cls in MODELS.values():
        if type(config) is cls.config_class:
            return cls(config)
    raise ValueError(f"no registered model takes a {type(config).__name__}")
