"""The Performance RNN's request: the options it takes, their defaults and bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import Field

from museforge.defaults import DENSITY_BINS, N_DENSITY_CLASSES
from museforge.families.base import CONTINUE, GENERATE, Operation, SongRequest, form
from museforge.families.fields import MAX_SECONDS, PitchClasses, Temperature, TopK, TopP

if TYPE_CHECKING:
    pass


class PerformanceRequest(SongRequest):
    """A Performance RNN song: ``seconds`` of new music at a note density, favouring some pitch classes."""

    seconds: Annotated[
        float,
        Field(gt=0, le=MAX_SECONDS, description="Length of the new music in seconds."),
        form("Seconds", "float", step=1.0, form_min=1.0, cap="max_seconds"),
    ] = 20.0
    density: Annotated[
        int | None,
        Field(
            ge=0,
            le=N_DENSITY_CLASSES - 1,
            description="How many notes per second (a class 0..7); empty: the model decides.",
        ),
        form("Note density", "select", choices="density"),
    ] = None
    pitch_classes: PitchClasses = None
    temperature: Temperature = 1.0
    top_p: TopP = 0.95
    top_k: TopK = None

    operations: ClassVar[tuple[Operation, ...]] = (GENERATE, CONTINUE)


def density_label(k: int) -> str:
    bins = DENSITY_BINS
    if k == 0:
        return f"sparse (< {bins[0]:g} notes/s)"
    if k == N_DENSITY_CLASSES - 1:
        return f"very dense (≥ {bins[-1]:g} notes/s)"
    return f"{bins[k - 1]:g}-{bins[k]:g} notes/s"
