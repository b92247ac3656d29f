"""Model families by name, and one way to build any of them from a config or its dict.

The names below are imported from their modules on first use (`museforge._lazy`): the zoo lists models
without loading torch.
"""

from museforge._lazy import lazy_exports

_EXPORTS = {
    "MODELS": "registry",
    "ModelConfig": "config",
    "MuseGAN": "musegan",
    "MuseGANConfig": "musegan",
    "MuseMorphose": "musemorphose",
    "MuseMorphoseConfig": "musemorphose",
    "PerformanceRNN": "performance_rnn",
    "PerformanceRNNConfig": "performance_rnn",
    "TransformerConfig": "transformer",
    "TransformerLM": "transformer",
    "build_model": "registry",
    "config_from_dict": "registry",
    "model_name": "registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "MODELS",
    "ModelConfig",
    "MuseGAN",
    "MuseGANConfig",
    "MuseMorphose",
    "MuseMorphoseConfig",
    "PerformanceRNN",
    "PerformanceRNNConfig",
    "TransformerConfig",
    "TransformerLM",
    "build_model",
    "config_from_dict",
    "model_name",
]
