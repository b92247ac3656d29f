"""The REMI Transformer's request: the options it takes, their defaults and bounds."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar

from pydantic import BeforeValidator, Field

from museforge.families.base import CONTINUE, GENERATE, Operation, RequestError, SongRequest, form
from museforge.families.fields import (
    Bars,
    Polyphony,
    PrimerBars,
    Rhythm,
    Style,
    Temperature,
    TopK,
    TopP,
    blank_is_none,
)

# A 512-token context holds the bars to write and the music around them: 8 bars of a busy piece take about half.
MAX_INFILL_BARS = 8
INFILL = Operation(
    "infill", "Fill in", True, "Write some bars of a piece again, knowing the music before and after them."
)
SPAN = re.compile(r"\s*(\d{1,9})\s*(?:-\s*(\d{1,9}))?\s*", re.ASCII)  # "5" or "5-8"


class RemiRequest(SongRequest):
    """A REMI Transformer song: ``bars`` of new music in a style, each bar's rhythm and polyphony free or asked;
    or a piece's ``infill`` bars written again between the bars around them, or only its ``track`` there."""

    style: Style = None
    bars: Bars = 16
    primer_bars: PrimerBars = None
    infill: Annotated[
        str | None,
        BeforeValidator(blank_is_none),
        Field(
            max_length=32,
            description=f"Fill in: the bars to write again, counted from 1, e.g. '5-8' (at most {MAX_INFILL_BARS} "
            "bars); every other bar stays note for note. With rhythm/polyphony lists, those give one class per "
            "filled bar.",
        ),
        form("Bars to fill in", "bar_range", operations=("infill",), shown=""),
    ] = None
    track: Annotated[
        int | None,
        Field(
            ge=1,
            le=128,
            description="Fill in one part: the track to write again, counted from 1 (e.g. 2, a chorale's alto), "
            "in the infill bars or the whole piece; every other part stays note for note. Needs a model trained "
            "on multi-track REMI.",
        ),
        form(
            "Part to fill in (track number; empty: the bars)",
            "shift",
            step=1,
            operations=("infill",),
            shown="",
        ),
    ] = None
    voices: Annotated[
        int | None,
        Field(
            ge=1,
            le=16,
            description="Voices (parts) a multi-track model writes, at most, a piece you bring's included. "
            "Empty: as many as the style's pieces usually have (a chorale 4, folk 1). Needs a model trained on "
            "multi-track REMI.",
        ),
        form("Voices (multi-track models)", "number", step=1, operations=("generate", "continue"), shown=""),
    ] = None
    temperature: Temperature = 1.0
    top_p: TopP = 0.95
    top_k: TopK = None
    rhythm: Rhythm = None
    polyphony: Polyphony = None

    operations: ClassVar[tuple[Operation, ...]] = (GENERATE, CONTINUE, INFILL)

    def infill_span(self) -> tuple[int, int]:
        """The bars to fill, 0-based and inclusive; a `RequestError` naming what is wrong with ``infill``."""
        if self.infill is None:
            raise RequestError("infill needs the bars to fill in, e.g. infill='5-8'")
        match = SPAN.fullmatch(self.infill)
        if match is None:
            raise RequestError(
                f"infill must be one bar or a range counted from 1, like '5' or '5-8'; got {self.infill!r}"
            )
        first, last = int(match[1]), int(match[2] or match[1])
        if first < 1 or last < first:
            raise RequestError(
                f"infill must count bars from 1 and run forwards, like '5-8'; got {self.infill!r}"
            )
        if last - first + 1 > MAX_INFILL_BARS:
            raise RequestError(
                f"infill may fill at most {MAX_INFILL_BARS} bars at once, got {last - first + 1}"
            )
        return first - 1, last - 1
