"""The model families, each in its own home, and the registry that maps names to them.

A family (`museforge.families.base.Family`) owns its typed request (the options it takes, their defaults and
bounds), its operations, its controls as forms and the API show them, and its sampling. The command line, the
web app and the lab ask this registry; nothing else names a family. Adding a family is a folder beside these
and one line in `FAMILIES`.

``generate_song(model, **options)`` is the Python entry point: the options are the model's family's request
fields (see ``museforge families`` or each ``*Request`` class), checked and filled with that model's defaults
exactly as the command line and the API do.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from museforge.families import musegan, musemorphose, performance, remi
from museforge.families.base import Family, Limits, RequestError, SongRequest

if TYPE_CHECKING:
    import symusic
    import torch

    from museforge.families.base import ProgressFn
    from museforge.generation.api import GeneratedSong, LoadedModel
    from museforge.metrics.originality import OriginalityIndex

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


def generate_song(
    model: str | Path | LoadedModel,
    *,
    primer: str | Path | symusic.Score | None = None,
    accompany: str | Path | symusic.Score | None = None,
    operation: str | None = None,
    progress: ProgressFn | None = None,
    originality_index: OriginalityIndex | str | Path | None = None,
    device: str | torch.device = "cpu",
    limits: Limits | None = None,
    **options: Any,
) -> list[GeneratedSong]:
    """Songs from ``model`` (a shipped name, a checkpoint folder, or `get_model`'s result). ``options`` are its
    family's request fields; an option the family does not take is refused by name. ``primer`` is a piece to
    continue, ``accompany`` one whose ``tracks`` a MuseGAN keeps; ``operation`` (default: generate, or continue /
    accompany with such a piece) may also be a family's own, e.g. ``restyle`` with ``primer`` as the piece.
    ``seed=None`` draws a seed, recorded in each song's params so any song can be made again. ``progress(f)`` is
    called as sampling goes. Originality is checked against ``originality_index`` or, if none is given, the
    model's own ``originality.npz``; a primer is left out of the check (it is the user's music, not the model's).
    """
    from museforge.generation.api import LoadedModel, get_model, read_piece
    from museforge.models.zoo import model_info

    loaded = model if isinstance(model, LoadedModel) else get_model(model, device)
    family = family_of(loaded)
    if primer is not None and accompany is not None:
        raise RequestError("give a primer to continue or a piece to accompany, not both")
    piece = primer if primer is not None else accompany
    if operation is None and piece is not None:
        operation = (
            "accompany"
            if accompany is not None
            else next(o.name for o in family.operations if o.needs_source)
        )
    request = family.parse({**options, "operation": operation or "generate"})
    needs = family.operation(request.operation).needs_source
    if needs != (piece is not None):
        raise RequestError(
            f"{request.operation} needs a source piece (primer=...)"
            if needs
            else f"{request.operation} starts from nothing: give no primer"
        )
    source = None if piece is None else read_piece(piece, "primer" if primer is not None else "accompaniment")
    request = family.resolve(request, model_info(loaded.path, loaded.name), limits)
    return family.sample(loaded, request, source, progress, originality_index)


def restyle_song(
    model: str | Path | LoadedModel,
    piece: str | Path | symusic.Score,
    *,
    seed: int | None = None,
    device: str | torch.device = "cpu",
    originality_index: OriginalityIndex | str | Path | None = None,
    **options: Any,
) -> list[GeneratedSong]:
    """Re-style ``piece`` with a MuseMorphose, in the terms of the library's transfer (0-based ``bars``, a shift
    or classes per chosen bar as ``rhythm``/``polyphony``, ``keep_other_bars``): see
    `museforge.families.musemorphose.sample.restyle_song`."""
    import secrets

    from museforge.families.base import MAX_SEED
    from museforge.families.musemorphose.sample import restyle_song as restyle
    from museforge.generation.api import LoadedModel, get_model

    loaded = model if isinstance(model, LoadedModel) else get_model(model, device)
    if family_of(loaded) is not musemorphose.FAMILY:
        raise ValueError(f"model {loaded.name} ({loaded.family}) cannot re-style: use a MuseMorphose")
    if options.get("num_samples", 1) < 1:
        raise ValueError(f"num_samples must be >= 1, got {options['num_samples']}")
    seed = secrets.randbelow(MAX_SEED) if seed is None else seed
    return restyle(loaded, piece, seed=seed, originality=originality_index, **options)


__all__ = [
    "FAMILIES",
    "Family",
    "Limits",
    "RequestError",
    "SongRequest",
    "family_names",
    "family_of",
    "generate_song",
    "get_family",
    "restyle_song",
]
