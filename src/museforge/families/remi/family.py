"""The REMI Transformer: its operations, the defaults and checks that need the model, and its sampling."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from museforge.families.base import (
    Family,
    Limits,
    Operation,
    ProgressFn,
    RequestError,
    SongRequest,
)
from museforge.families.remi.request import INFILL, RemiRequest

MULTI_TRACK_FIELDS = frozenset({"voices", "track"})  # request fields only a multi-track model can honour

if TYPE_CHECKING:
    import symusic
    from torch import Tensor, nn

    from museforge.families.loaded import GeneratedSong, LoadedModel
    from museforge.metrics.likelihood import TokenScorer
    from museforge.metrics.originality import OriginalityIndex
    from museforge.models.zoo import ModelInfo
    from museforge.training.recipes import Recipe, RunOptions, TrainingRun


class RemiFamily(Family):
    name = "remi_transformer"
    label = "REMI Transformer"
    checkpoint_model = "transformer"
    aliases = ("remi-transformer",)
    request = RemiRequest
    tokenizer = "remi"
    half_precision = True
    batched_decoding = True
    decoding_state = ", KV cache"
    fills_in = True

    def model_operations(self, loaded: LoadedModel) -> tuple[Operation, ...]:
        """Fill in only where the model was trained to (its tokenizer has the fill tokens)."""
        fills = bool(getattr(loaded.tokenizer, "fill_ids", None))
        return tuple(o for o in self.operations if o is not INFILL or fills)

    def resolve(self, request: SongRequest, info: ModelInfo, limits: Limits | None = None) -> SongRequest:
        assert isinstance(request, RemiRequest)
        if request.operation == INFILL.name:
            if request.infill is not None or request.track is None:
                request.infill_span()
            if "bars" in request.model_fields_set or request.primer_bars is not None:
                raise RequestError("infill keeps the piece's length: leave out bars and primer_bars")
        elif request.infill is not None or request.track is not None:
            name = "infill" if request.infill is not None else "track"
            raise RequestError(f"{name} is for the {INFILL.name!r} operation, not {request.operation!r}")
        return super().resolve(request, info, limits)

    def offers(self, name: str, info: ModelInfo) -> bool:
        """Voices and part fill-in only for a multi-track model: a single-stream one has no parts to count."""
        return info.multi_track or name not in MULTI_TRACK_FIELDS

    def check(self, request: SongRequest, info: ModelInfo) -> None:
        super().check(request, info)
        assert isinstance(request, RemiRequest)
        bars = request.bars
        if request.operation == INFILL.name and request.infill is not None:
            first, last = request.infill_span()
            bars = last - first + 1
        for label, classes in (("rhythm", request.rhythm), ("polyphony", request.polyphony)):
            if classes is not None and len(classes) > bars:
                raise RequestError(f"{label} has {len(classes)} entries but only {bars} bars are written")
        if request.voices is not None and not info.multi_track:
            raise RequestError(
                f"voices needs a multi-track model (trained on REMI with Program tokens); {info.name} writes one "
                "stream: leave voices empty"
            )

    def check_source(
        self, request: SongRequest, source: symusic.Score, loaded: LoadedModel, limits: Limits
    ) -> None:
        """A fill-in needs a model trained to fill in and bars inside the piece."""
        if request.operation == INFILL.name:
            from museforge.families.remi.infill import check_infill

            assert isinstance(request, RemiRequest)
            if request.track is not None:
                from museforge.families.remi.infill import check_track

                check_track(loaded, request, source)
            else:
                check_infill(loaded, request, source)

    def scorer(self, model: nn.Module, tokenizer: Any) -> TokenScorer:
        from museforge.models.scoring import WindowScorer

        return WindowScorer(model)

    def sequence_inputs(self, model: nn.Module, params: dict[str, Any], length: int) -> dict[str, Tensor]:
        """Nothing beside the tokens: the style and the per-bar attributes are tokens of the sequence."""
        return {}

    def model_class(self) -> type[nn.Module]:
        from museforge.families.remi.model import TransformerLM

        return TransformerLM

    def draw(
        self,
        loaded: LoadedModel,
        request: SongRequest,
        source: symusic.Score | None = None,
        progress: ProgressFn | None = None,
        originality: OriginalityIndex | str | Path | None = None,
    ) -> list[GeneratedSong]:
        assert isinstance(request, RemiRequest)
        if request.operation == INFILL.name:
            from museforge.families.remi.infill import fill_track_remi, infill_remi

            fill = infill_remi if request.track is None else fill_track_remi
            return fill(loaded, request, source, progress, originality)
        from museforge.families.remi.sample import sample_remi

        return sample_remi(loaded, request, source, progress, originality)

    @property
    def presets(self) -> dict[str, Recipe]:
        from museforge.families.remi.train import PRESETS

        return PRESETS

    @property
    def data_fields(self) -> frozenset[str]:
        from museforge.families.remi.train import DATA_FIELDS

        return DATA_FIELDS

    def prepare_training(
        self, data_dir: Path, preset: str, out_dir: Path, options: RunOptions
    ) -> TrainingRun:
        from museforge.families.remi.train import prepare

        return prepare(self.recipe(preset), data_dir, out_dir, options, self.tokenizer)
