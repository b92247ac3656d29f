"""MuseMorphose: its operations, the defaults and checks that need the model, and its sampling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from museforge.defaults import DEFAULT_GUIDANCE
from museforge.families.base import (
    Family,
    Limits,
    ProgressFn,
    RequestError,
    SongRequest,
)
from museforge.families.musemorphose.request import (
    RESTYLE_FIELDS,
    MuseMorphoseRequest,
    check_restyle,
    restyled_bars,
)

if TYPE_CHECKING:
    import symusic
    import torch
    from torch import Tensor, nn

    from museforge.families.card import CardMeasures, Log, ShipOptions
    from museforge.families.loaded import GeneratedSong, LoadedModel
    from museforge.metrics.originality import OriginalityIndex
    from museforge.models.checkpoint import Checkpoint
    from museforge.models.zoo import ModelInfo
    from museforge.training.recipes import Recipe, RunOptions, TrainingRun


class MuseMorphoseFamily(Family):
    name = "musemorphose"
    label = "MuseMorphose"
    checkpoint_model = "musemorphose"
    request = MuseMorphoseRequest
    tokenizer = "remi"
    half_precision = True
    conditioned_decoder = True
    decoding_state = ", KV cache"

    def model_defaults(self, info: ModelInfo) -> dict[str, Any]:
        """The checkpoint's own temperature and top-p (the paper samples MuseMorphose at 1.2 / 0.9), so every
        entry point samples each model as its card measures it."""
        from museforge.families.musemorphose.model import MuseMorphoseConfig

        config = json.loads((info.path / "config.json").read_text(encoding="utf-8")).get("config", {})
        return {
            "temperature": float(config.get("temperature", MuseMorphoseConfig.temperature)),
            "top_p": float(config.get("top_p", MuseMorphoseConfig.top_p)),
        }

    def resolve(self, request: SongRequest, info: ModelInfo, limits: Limits | None = None) -> SongRequest:
        assert isinstance(request, MuseMorphoseRequest)
        if request.operation == "restyle":
            check_restyle(request)
            request = request.model_copy(
                update={"guidance": DEFAULT_GUIDANCE if request.guidance is None else request.guidance}
            )
        return super().resolve(request, info, limits)

    def check(self, request: SongRequest, info: ModelInfo) -> None:
        super().check(request, info)
        assert isinstance(request, MuseMorphoseRequest)
        if request.operation == "restyle":
            return
        given = [f for f in RESTYLE_FIELDS if getattr(request, f) is not None]
        if given:
            raise RequestError(
                f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for the restyle operation"
            )
        for label, classes in (("rhythm", request.rhythm), ("polyphony", request.polyphony)):
            if classes is not None and len(classes) > request.bars:
                raise RequestError(
                    f"{label} has {len(classes)} entries but only {request.bars} bars are generated"
                )

    def check_source(
        self, request: SongRequest, source: symusic.Score, loaded: LoadedModel, limits: Limits
    ) -> None:
        """A piece to re-style must hold notes and the bars asked for, no more of them than a generation may have
        (`Limits.max_bars`: re-styled bars are re-played one by one), and no more classes than re-styled bars."""
        assert isinstance(request, MuseMorphoseRequest)
        if request.operation != "restyle":
            return
        n_bars = len(loaded.tokenizer.encode(source).bar_starts)
        if n_bars == 0:
            raise RequestError("cannot re-style this piece: it holds no notes")
        selected = len(restyled_bars(request.restyle_bars, n_bars))
        if selected > limits.max_bars:
            raise RequestError(
                f"this would re-style {selected} bars, more than the {limits.max_bars} one job may play: "
                "pick the bars with restyle_bars, e.g. '1-16'"
            )
        for attr in ("rhythm", "polyphony"):
            classes = getattr(request, attr)
            if classes is not None and len(classes) > selected:
                raise RequestError(
                    f"{attr} gives {len(classes)} classes but only {selected} bar"
                    f"{' is' if selected == 1 else 's are'} re-styled: one class per re-styled bar"
                )

    @property
    def card_heading(self) -> str:
        from museforge.families.musemorphose.card import CONTROL_HEADING

        return CONTROL_HEADING

    def card_measures(
        self, ckpt: Checkpoint, run_dir: Path, data_dir: Path, options: ShipOptions, log: Log
    ) -> CardMeasures:
        from museforge.families.musemorphose.card import card_measures

        return card_measures(ckpt, data_dir, options, log)

    def card_remeasure(
        self,
        model_dir: Path,
        loaded: LoadedModel,
        served: LoadedModel,
        data_dir: Path,
        options: ShipOptions,
        log: Log,
    ) -> list[str]:
        from museforge.families.musemorphose.card import card_remeasure

        return card_remeasure(model_dir, loaded, served, data_dir, options, log)

    def probe_logits(self, model: nn.Module, probe: Tensor, gen: torch.Generator) -> Tensor:
        """The probe decoded as one bar whose condition comes from a random latent and random classes (drawn
        from ``gen``), so the condition path is checked too."""
        import torch

        c = model.config
        z = torch.randn(1, 1, c.d_latent, generator=gen).to(probe.device)
        rhythm, poly = torch.randint(c.n_attr_classes, (2, 1, 1), generator=gen).to(probe.device)
        cond = model.conditions(z, rhythm, poly)  # [1, 1, D], in the model's dtype
        return model.decode(probe, cond.expand(1, probe.shape[1], -1))[0]

    def model_class(self) -> type[nn.Module]:
        from museforge.families.musemorphose.model import MuseMorphose

        return MuseMorphose

    def draw(
        self,
        loaded: LoadedModel,
        request: SongRequest,
        source: symusic.Score | None = None,
        progress: ProgressFn | None = None,
        originality: OriginalityIndex | str | Path | None = None,
    ) -> list[GeneratedSong]:
        from museforge.families.musemorphose.sample import restyle_request, sample_musemorphose

        assert isinstance(request, MuseMorphoseRequest)
        if request.operation == "restyle":
            if source is None:
                raise RequestError("restyle needs a source piece")
            return restyle_request(loaded, request, source, progress, originality)
        return sample_musemorphose(loaded, request, source, progress, originality)

    @property
    def presets(self) -> dict[str, Recipe]:
        from museforge.families.musemorphose.train import PRESETS

        return PRESETS

    @property
    def data_fields(self) -> frozenset[str]:
        from museforge.families.musemorphose.train import DATA_FIELDS

        return DATA_FIELDS

    def prepare_training(
        self, data_dir: Path, preset: str, out_dir: Path, options: RunOptions
    ) -> TrainingRun:
        from museforge.families.musemorphose.train import prepare

        return prepare(self.recipe(preset), data_dir, out_dir, options, self.tokenizer)
