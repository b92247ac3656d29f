"""MuseGAN's request: the options it takes, their defaults and bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field

from museforge.families.base import (
    GENERATE,
    Operation,
    SongRequest,
    form,
)
from museforge.families.fields import MAX_BARS, TrackMap, blank_is_none

if TYPE_CHECKING:
    pass

DEFAULT_BARS = 8  # two of its 4-bar phrases
ACCOMPANY = Operation(
    "accompany",
    "Accompany",
    True,
    "Keep tracks of a piece (e.g. its melody) and let the model play the others.",
)


class MuseGANRequest(SongRequest):
    """A MuseGAN piece: ``bars`` in a genre, a latent ``walk`` between two phrases, or an accompaniment of the
    ``tracks`` of a piece kept as they are."""

    style: Annotated[
        str | None,
        BeforeValidator(blank_is_none),
        Field(
            description="The kind of music the band plays (one of the model's genres; default: its first)."
        ),
        form("Genre", "select", choices="styles"),
    ] = None
    bars: Annotated[
        int | None,
        Field(
            ge=1,
            le=MAX_BARS,
            description=f"Length in bars (4-bar phrases chained; default {DEFAULT_BARS}); when accompanying, at "
            "most this much of the piece (default: all of it).",
        ),
        form("Bars", "int", step=1, cap="max_bars", shown=DEFAULT_BARS),
    ] = None
    binarize: Annotated[
        Literal["threshold", "bernoulli"],
        Field(description="How the model's soft piano roll becomes notes."),
        form(
            "Note choice",
            "select",
            choices=(("threshold", "Confident notes only"), ("bernoulli", "Sampled (looser, busier)")),
        ),
    ] = "threshold"
    tracks: TrackMap = None
    walk: Annotated[
        int | None,
        Field(
            ge=2,
            le=64,
            description="A piece of N phrases walking in latent space from one phrase to another.",
        ),
    ] = None

    operations: ClassVar[tuple[Operation, ...]] = (GENERATE, ACCOMPANY)
