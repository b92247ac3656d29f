"""The REMI Transformer's request: the options it takes, their defaults and bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from museforge.families.base import (
    CONTINUE,
    GENERATE,
    Operation,
    SongRequest,
)
from museforge.families.fields import Bars, Polyphony, PrimerBars, Rhythm, Style, Temperature, TopK, TopP

if TYPE_CHECKING:
    pass


class RemiRequest(SongRequest):
    """A REMI Transformer song: ``bars`` of new music in a style, each bar's rhythm and polyphony free or asked."""

    style: Style = None
    bars: Bars = 16
    primer_bars: PrimerBars = None
    temperature: Temperature = 1.0
    top_p: TopP = 0.95
    top_k: TopK = None
    rhythm: Rhythm = None
    polyphony: Polyphony = None

    operations: ClassVar[tuple[Operation, ...]] = (GENERATE, CONTINUE)
