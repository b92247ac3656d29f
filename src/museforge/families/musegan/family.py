"""MuseGAN: its operations, the defaults and checks that need the model, and its sampling."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from museforge.families.base import (
    Family,
    Limits,
    ProgressFn,
    RequestError,
    SongRequest,
)
from museforge.families.musegan.request import DEFAULT_BARS, MuseGANRequest

if TYPE_CHECKING:
    import symusic
    from torch import nn

    from museforge.families.card import CardMeasures, Log, ShipOptions
    from museforge.families.loaded import GeneratedSong, LoadedModel
    from museforge.metrics.originality import OriginalityIndex
    from museforge.models.checkpoint import Checkpoint
    from museforge.models.zoo import ModelInfo
    from museforge.training.recipes import Recipe, RunOptions, TrainingRun


class MuseGANFamily(Family):
    name = "musegan"
    label = "MuseGAN"
    checkpoint_model = "musegan"
    request = MuseGANRequest
    tokenizer = "pianoroll"
    style_word = "genre"

    def sampling_summary(self, request: SongRequest) -> str:
        assert isinstance(request, MuseGANRequest)
        notes = (
            "where the generator's output is above 0"
            if request.binarize == "threshold"
            else "sampled per cell"
        )
        return f"{request.bars} bars each, notes {notes}"

    def model_defaults(self, info: ModelInfo) -> dict[str, Any]:
        return {"style": info.styles[0]} if info.styles else {}

    def resolve(self, request: SongRequest, info: ModelInfo, limits: Limits | None = None) -> SongRequest:
        assert isinstance(request, MuseGANRequest)
        if request.bars is None and request.walk is None:
            accompanying = request.operation == "accompany"
            bars = (limits.max_bars if limits is not None else None) if accompanying else DEFAULT_BARS
            request = request.model_copy(update={"bars": bars})
        return super().resolve(request, info, limits)

    def check(self, request: SongRequest, info: ModelInfo) -> None:
        super().check(request, info)
        assert isinstance(request, MuseGANRequest)
        if request.operation != "accompany":
            if request.tracks is not None:
                raise RequestError("tracks are for the accompany operation: generate makes every track")
            return
        if request.walk is not None:
            raise RequestError("walk makes a piece of its own: it cannot accompany")
        if not request.tracks:
            raise RequestError(
                f"accompany needs tracks: which track of your piece each kept model track plays, e.g. "
                f"{{{info.tracks[0]!r}: 0}}; model tracks: {', '.join(info.tracks)}"
            )
        from museforge.families.musegan.generate import parse_track_map

        try:
            mapping = parse_track_map(request.tracks, info.tracks)
        except ValueError as exc:
            raise RequestError(str(exc)) from exc
        if len(mapping) >= len(info.tracks):
            raise RequestError(
                f"all {len(info.tracks)} model tracks are kept: leave at least one for the model to play"
            )

    def check_source(
        self, request: SongRequest, source: symusic.Score, loaded: LoadedModel, limits: Limits
    ) -> None:
        """Every kept track must exist in the piece and hold notes the model's roll can show."""
        from museforge.families.musegan.generate import given_rolls, parse_track_map

        assert isinstance(request, MuseGANRequest)
        tok = loaded.tokenizer
        names = [t.name for t in tok.config.tracks]
        try:
            given_rolls(source, tok, parse_track_map(request.tracks, names), max_bars=request.bars)
        except ValueError as exc:
            raise RequestError(f"cannot accompany this piece: {exc}") from exc

    def card_measures(
        self, ckpt: Checkpoint, run_dir: Path, data_dir: Path, options: ShipOptions, log: Log
    ) -> CardMeasures:
        """A GAN has no likelihood: the paper's metric table against the training data instead."""
        from museforge.families.musegan.card import card_measures

        run = json.loads((run_dir / "run.json").read_text())
        filters = {**self.recipe(run["preset"]).model, **run.get("model_overrides", {})}
        return card_measures(filters, ckpt, data_dir, options, log)

    def styles(self, model: nn.Module, tokenizer: Any) -> tuple[str, ...]:
        return tuple(model.config.genres)

    def model_class(self) -> type[nn.Module]:
        from museforge.families.musegan.model import MuseGAN

        return MuseGAN

    def draw(
        self,
        loaded: LoadedModel,
        request: SongRequest,
        source: symusic.Score | None = None,
        progress: ProgressFn | None = None,
        originality: OriginalityIndex | str | Path | None = None,
    ) -> list[GeneratedSong]:
        from museforge.families.musegan.sample import sample_musegan

        assert isinstance(request, MuseGANRequest)
        return sample_musegan(loaded, request, source, progress, originality)

    @property
    def presets(self) -> dict[str, Recipe]:
        from museforge.families.musegan.train import PRESETS

        return PRESETS

    @property
    def data_fields(self) -> frozenset[str]:
        from museforge.families.musegan.train import DATA_FIELDS

        return DATA_FIELDS

    @property
    def data_filters(self) -> frozenset[str]:
        from museforge.families.musegan.train import DATA_FILTERS

        return DATA_FILTERS

    def prepare_training(
        self, data_dir: Path, preset: str, out_dir: Path, options: RunOptions
    ) -> TrainingRun:
        from museforge.families.musegan.train import prepare

        return prepare(self.recipe(preset), data_dir, out_dir, options)
