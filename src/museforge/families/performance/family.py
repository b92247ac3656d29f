"""The Performance RNN: its operations, the defaults and checks that need the model, and its sampling."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from museforge.defaults import N_DENSITY_CLASSES
from museforge.families.base import Family, ProgressFn, SongRequest
from museforge.families.performance.request import PerformanceRequest, density_label

if TYPE_CHECKING:
    import numpy as np
    import symusic
    from torch import Tensor, nn

    from museforge.families.loaded import GeneratedSong, LoadedModel
    from museforge.metrics.likelihood import TokenScorer
    from museforge.metrics.originality import OriginalityIndex
    from museforge.models.zoo import ModelInfo
    from museforge.training.recipes import Recipe, RunOptions, TrainingRun


class PerformanceFamily(Family):
    name = "performance_rnn"
    label = "Performance RNN"
    checkpoint_model = "performance_rnn"
    aliases = ("performance-rnn",)
    request = PerformanceRequest
    decoding_state = ", carried LSTM state"
    tokenizer = "performance"

    def choices(self, source: str, info: ModelInfo) -> list[tuple[str, str]]:
        if source == "density":
            return [("", "Model decides")] + [(str(k), density_label(k)) for k in range(N_DENSITY_CLASSES)]
        return super().choices(source, info)

    def scorer(self, model: nn.Module, tokenizer: Any) -> TokenScorer:
        """Scored with the controls each event sequence implies (its density and pitch histogram), as trained."""
        from museforge.families.performance.model import controls_for_events
        from museforge.models.scoring import RecurrentScorer

        def controls(ids: np.ndarray) -> Tensor:
            return controls_for_events(tokenizer.event_times(ids), tokenizer.onset_pitches(ids))

        return RecurrentScorer(model, controls)

    def sequence_inputs(self, model: nn.Module, params: dict[str, Any], length: int) -> dict[str, Tensor]:
        """The density and pitch-class controls the song was sampled with, at every position (as sampled)."""
        from museforge.families.performance.sample import request_controls

        if not model.config.use_controls:
            return {}
        controls = request_controls(params.get("density"), params.get("pitch_classes"))  # [22]
        return {"controls": controls.expand(length, controls.shape[-1])}

    def model_class(self) -> type[nn.Module]:
        from museforge.families.performance.model import PerformanceRNN

        return PerformanceRNN

    def draw(
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

    @property
    def presets(self) -> dict[str, Recipe]:
        from museforge.families.performance.train import PRESETS

        return PRESETS

    @property
    def data_fields(self) -> frozenset[str]:
        from museforge.families.performance.train import DATA_FIELDS

        return DATA_FIELDS

    def prepare_training(
        self, data_dir: Path, preset: str, out_dir: Path, options: RunOptions
    ) -> TrainingRun:
        from museforge.families.performance.train import prepare

        return prepare(self.recipe(preset), data_dir, out_dir, options, self.tokenizer)
