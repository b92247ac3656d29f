"""The Performance RNN's request and what the app, the command line and the API know of it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import Field

from museforge.defaults import DENSITY_BINS, N_DENSITY_CLASSES
from museforge.families.base import CONTINUE, GENERATE, Family, Operation, ProgressFn, SongRequest, form
from museforge.families.fields import MAX_SECONDS, PitchClasses, Temperature, TopK, TopP

if TYPE_CHECKING:
    import symusic

    from museforge.generation.api import GeneratedSong, LoadedModel
    from museforge.metrics.originality import OriginalityIndex
    from museforge.models.zoo import ModelInfo


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


def _density_label(k: int) -> str:
    bins = DENSITY_BINS
    if k == 0:
        return f"sparse (< {bins[0]:g} notes/s)"
    if k == N_DENSITY_CLASSES - 1:
        return f"very dense (≥ {bins[-1]:g} notes/s)"
    return f"{bins[k - 1]:g}-{bins[k]:g} notes/s"


class PerformanceFamily(Family):
    name = "performance"
    label = "Performance RNN"
    checkpoint_model = "performance_rnn"
    aliases = ("performance-rnn", "performance_rnn")
    request = PerformanceRequest

    def choices(self, source: str, info: ModelInfo) -> list[tuple[str, str]]:
        if source == "density":
            return [("", "Model decides")] + [(str(k), _density_label(k)) for k in range(N_DENSITY_CLASSES)]
        return super().choices(source, info)

    def sample(
        self,
        loaded: LoadedModel,
        request: SongRequest,
        source: symusic.Score | None = None,
        progress: ProgressFn | None = None,
        originality: OriginalityIndex | str | Path | None = None,
    ) -> list[GeneratedSong]:
        from museforge.families.performance.sample import sample_performance

        assert isinstance(request, PerformanceRequest)
        return sample_performance(loaded, request, source, progress, originality)
