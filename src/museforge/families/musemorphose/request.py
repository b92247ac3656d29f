"""MuseMorphose's request: the options it takes, their defaults and bounds."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BeforeValidator, Field

from museforge.defaults import DEFAULT_GUIDANCE, MAX_GUIDANCE
from museforge.families.base import (
    CONTINUE,
    GENERATE,
    Operation,
    RequestError,
    SongRequest,
    form,
)
from museforge.families.fields import MAX_BARS, MAX_CLASS, Bars, Polyphony, PrimerBars, Rhythm, Style, TopP

if TYPE_CHECKING:
    pass

MAX_CANDIDATES = 8  # tries per bar one request may ask for (4 take about 2.5x as long as 1)
RESTYLE = Operation(
    "restyle",
    "Re-style",
    True,
    "Keep a piece's melody and harmony and play its bars busier or calmer, fuller or thinner.",
)
PARTS = ("each", "together")
PART_CHOICES = (("each", "Each part on its own"), ("together", "All parts as one track"))
RESTYLE_FIELDS = ("rhythm_shift", "polyphony_shift", "restyle_bars", "guidance")
BAR_RANGE = re.compile(r"(\d{1,9})(?:-(\d{1,9}))?", re.ASCII)  # "5" or "5-8"
SHIFT_HELP = "Re-style: classes added to each re-styled bar's {} (-7 to +7; 0 keeps it)."
Shift = Annotated[int | None, Field(ge=-MAX_CLASS, le=MAX_CLASS)]


def _joined(value: Any) -> Any:
    """Bar numbers given as a list ([5, 6, 7]) in the text form ('5,6,7') that one parser reads."""
    return ",".join(str(v) for v in value) if isinstance(value, list | tuple) else value


class MuseMorphoseRequest(SongRequest):
    """A MuseMorphose song from its prior or a continuation (``bars`` new bars, each bar's classes free or asked),
    or a re-style of a piece's ``restyle_bars`` with shifted or asked classes."""

    style: Style = None
    bars: Bars = 16
    primer_bars: PrimerBars = None
    temperature: Annotated[
        float | None,
        Field(
            gt=0,
            le=3,
            description="Lower: safer, more repetitive. Higher: more adventurous (default: the model's own).",
        ),
        form(
            "Temperature", "float", step=0.05, form_min=0.5, form_max=1.5, operations=("generate", "continue")
        ),
    ] = None
    top_p: Annotated[
        TopP,
        Field(
            description="Sample only from the most likely tokens holding this share of probability (default: the "
            "model's own)."
        ),
    ] = None
    candidates: Annotated[
        int,
        Field(
            ge=1,
            le=MAX_CANDIDATES,
            description="Each bar is sampled this many times and the one nearest its asked rhythm and polyphony is "
            "kept, an attribute you left unshifted counting most: truer control, slower (4 tries take about 2.5 "
            "times as long as 1).",
        ),
        form("Tries per bar", "int", step=1),
    ] = 1
    rhythm: Rhythm = None
    polyphony: Polyphony = None
    rhythm_shift: Annotated[
        Shift,
        Field(description=SHIFT_HELP.format("rhythmic intensity (+ busier, - calmer)")),
        form("Rhythm shift", "shift", step=1, operations=("restyle",), shown=0),
    ] = None
    polyphony_shift: Annotated[
        Shift,
        Field(description=SHIFT_HELP.format("polyphony (+ fuller, - thinner)")),
        form("Polyphony shift", "shift", step=1, operations=("restyle",), shown=0),
    ] = None
    guidance: Annotated[
        float | None,
        Field(
            ge=0,
            le=MAX_GUIDANCE,
            description="Re-style: how much to amplify the asked change against the piece's own classes (0: the "
            f"model alone; default {DEFAULT_GUIDANCE:g}). Truer rhythm and polyphony, a little less like the piece, "
            "twice the time.",
        ),
        form("Guidance", "strength", step=0.5, operations=("restyle",), shown=DEFAULT_GUIDANCE),
    ] = None
    restyle_bars: Annotated[
        Annotated[str, Field(max_length=10 * MAX_BARS)] | None,
        BeforeValidator(_joined),
        Field(
            description="Re-style: the bars to change, counted from 1, e.g. '5-8', '1,3,5-8' or [5, 6]; default "
            "every bar. The others stay note for note. With rhythm/polyphony lists, those give one class per "
            "re-styled bar (null keeps the bar's own).",
        ),
        form("Bars to re-style", "bar_range", operations=("restyle",), shown=""),
    ] = None

    parts: Annotated[
        Literal["each", "together"],
        Field(
            description="Re-style a piece of several parts: 'each' re-plays every part on its own, so it keeps "
            "its instrument, register and line; 'together' merges them into one track first.",
        ),
        form("Parts", "select", choices=PART_CHOICES, operations=("restyle",)),
    ] = "each"

    operations: ClassVar[tuple[Operation, ...]] = (GENERATE, CONTINUE, RESTYLE)


def bar_ranges(spec: str) -> list[tuple[int, int]]:
    """``restyle_bars`` as sorted, merged (first, last) ranges of bar numbers counted from 1."""
    ranges: list[tuple[int, int]] = []
    parts = spec.replace(" ", "").split(",")
    for part in filter(None, parts):
        match = BAR_RANGE.fullmatch(part)
        if match is None:
            raise RequestError(
                f"restyle_bars must be bar numbers counted from 1 or ranges, like '5-8' or '1,3,5-8'; got {part!r}"
            )
        first, last = int(match[1]), int(match[2] or match[1])
        if first < 1:
            raise RequestError(f"restyle_bars counts bars from 1, got {first}")
        if last < first:
            raise RequestError(f"restyle_bars range {part!r} runs backwards: write it {last}-{first}")
        ranges.append((first, last))
    if not ranges:
        raise RequestError("restyle_bars names no bar; leave it out to re-style every bar")
    merged: list[tuple[int, int]] = []
    for first, last in sorted(ranges):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def restyled_bars(spec: str | None, n_bars: int) -> list[int]:
    """The 0-based bars a restyle changes in a piece of ``n_bars`` bars (all when ``spec`` is None)."""
    if spec is None:
        return list(range(n_bars))
    ranges = bar_ranges(spec)
    if ranges[-1][1] > n_bars:
        raise RequestError(
            f"restyle_bars asks for bar {ranges[-1][1]}, but the piece has {n_bars} bar{'s' * (n_bars != 1)}"
        )
    return [b - 1 for first, last in ranges for b in range(first, last + 1)]


def check_restyle(request: MuseMorphoseRequest) -> None:
    if "bars" in request.model_fields_set or request.primer_bars is not None:
        raise RequestError(
            "restyle keeps the piece's length: leave out bars and primer_bars (restyle_bars picks the bars)"
        )
    for attr in ("rhythm", "polyphony"):
        if getattr(request, f"{attr}_shift") is not None and getattr(request, attr) is not None:
            raise RequestError(
                f"give {attr}_shift (one shift for every re-styled bar) or {attr} (a class per re-styled bar), not both"
            )
    if all(getattr(request, a) is None for a in ("rhythm", "polyphony", "rhythm_shift", "polyphony_shift")):
        raise RequestError(
            f"restyle needs something to change: rhythm_shift or polyphony_shift (-{MAX_CLASS} to +{MAX_CLASS}), "
            "or rhythm/polyphony classes per re-styled bar"
        )
    if request.restyle_bars is not None:
        bar_ranges(request.restyle_bars)
