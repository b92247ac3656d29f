"""The model families, each in its own home, and the registry that maps names to them.

A family (`museforge.families.base.Family`) owns its typed request (the options it takes, their defaults and
bounds), its operations, its controls as forms and the API show them, and its sampling. The command line, the
web app and the lab ask this registry; nothing else names a family. Adding a family is a folder beside these
and one line in `museforge.families.registry.FAMILIES`.

Songs are made through `museforge.families.serving` (``generate_song``); a model is loaded through
`load_checkpoint` here, the one way to read any family's checkpoint. The registry is imported on first use,
so `museforge models list` can name the default model without loading pydantic or torch.
"""

from __future__ import annotations

from museforge._lazy import lazy_exports

# The shipped model the app and `generate` open on when none is named.
DEFAULT_MODEL = "remi-transformer"

_EXPORTS = {
    "FAMILIES": "registry",
    "Family": "base",
    "Limits": "base",
    "RequestError": "base",
    "SongRequest": "base",
    "build_model": "registry",
    "family_names": "registry",
    "family_of": "registry",
    "get_family": "registry",
    "load_checkpoint": "registry",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "DEFAULT_MODEL",
    "FAMILIES",
    "Family",
    "Limits",
    "RequestError",
    "SongRequest",
    "build_model",
    "family_names",
    "family_of",
    "get_family",
    "load_checkpoint",
]
