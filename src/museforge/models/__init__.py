"""What every model shares: the config base, the network blocks, the one checkpoint format, and the shipped
models with their versions. The models themselves live in their families' homes (`museforge.families`).

The names below are imported from their modules on first use (`museforge._lazy`): the zoo lists models
without loading torch.
"""

from museforge._lazy import lazy_exports

_EXPORTS = {"ModelConfig": "config"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["ModelConfig"]
