"""What every model family is: a typed request, the controls a person sees, the operations it offers, and how it
samples.

A family's `SongRequest` subclass is the one source of its options, their defaults and their bounds. The command
line's ``generate`` options, the web form's controls, the JSON API's schema and the refusals of options a family
does not take are all read from these request types, so they cannot disagree. A field's `Form` metadata says how
a person sees it (label, widget, step, which operations take it, which deployment limit caps it, where its
choices come from).
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

from museforge.defaults import MAX_SEED

if TYPE_CHECKING:
    import symusic
    import torch
    from torch import Tensor, nn

    from museforge.families.card import CardMeasures, Log, ShipOptions
    from museforge.families.loaded import GeneratedSong, LoadedModel
    from museforge.metrics.likelihood import TokenScorer
    from museforge.metrics.originality import OriginalityIndex
    from museforge.models.checkpoint import Checkpoint
    from museforge.models.zoo import ModelInfo
    from museforge.training.recipes import Recipe, RunOptions, TrainingRun

MAX_SAMPLES = 64  # one request's songs; a deployment caps it lower (`Limits.max_samples`)
MIN_QPM, MAX_QPM = 20.0, 300.0
MAX_INSTRUMENTS = 16  # a General MIDI file has 16 channels
ProgressFn = Callable[[float], None]


class RequestError(ValueError):
    """A request the model cannot serve; the message says what to change."""


@dataclass(frozen=True)
class Limits:
    """Request limits of a deployment (the web app's settings); the command line has none beyond the types'."""

    max_bars: int
    max_seconds: float
    max_samples: int


@dataclass(frozen=True)
class Form:
    """How a request field appears to a person: in the form, the API's model listing and the CLI's help.

    ``kind`` is the widget (select, int, float, seed, bar_plan, pitch_classes, track_map, shift, bar_range,
    strength, count); ``operations`` the operations that take the field (empty: every one); ``cap`` names the
    `Limits` field that caps it in a deployment; ``choices`` names where its choices come from when they depend
    on the model ("styles", "tracks") or lists them."""

    label: str
    kind: str
    step: float | None = None
    operations: tuple[str, ...] = ()
    cap: str | None = None
    choices: str | tuple[tuple[str, str], ...] = ()
    form_min: float | None = None  # the form's slider range where it is narrower than the type's bounds
    form_max: float | None = None
    shown: Any = None  # the value a form starts at where the type's default is "the family decides" (None)
    control: str | None = (
        None  # the control's name where it differs from the field's (one control, two fields)
    )


@dataclass(frozen=True)
class Control:
    """One form field / API parameter, as ``GET /api/v1/models`` lists it."""

    name: str
    label: str
    kind: str
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: list[tuple[str, str]] = field(default_factory=list)  # (value, label)
    help: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Operation:
    """Something a family does: from nothing, or from a source piece (continue, re-style, accompany)."""

    name: str
    label: str
    needs_source: bool
    description: str


GENERATE = Operation("generate", "Generate", False, "New music from nothing but the controls.")
CONTINUE = Operation("continue", "Continue", True, "Keep the start of a piece and let the model carry on.")


def form(label: str, kind: str, **kwargs: Any) -> Form:
    return Form(label, kind, **kwargs)


def _key_name(value: Any) -> Any:
    """'am', 'F#', 'bb major' -> 'A minor', 'F#', 'Bb major'; blank -> None."""
    if not isinstance(value, str):
        return value
    if not value.strip():
        return None
    from museforge.generation.output import parse_key

    return str(parse_key(value))


def _instrument_list(value: Any) -> Any:
    """'Violin, 42' or ['Violin', 42] -> [40, 42]; blank -> None."""
    from museforge.generation.output import gm_program

    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        return items
    names = [v for v in items if str(v).strip()]
    return [gm_program(v) for v in names] or None


class SongRequest(BaseModel):
    """The options every family takes. NaN and infinity (which Python's JSON parser accepts) are refused as not
    finite, so a bound is never compared with them; an option a family does not know is refused by name."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True, defer_build=True)

    operation: str = Field(
        "generate", description="generate, continue, or a family's own (restyle, accompany)."
    )
    seed: Annotated[
        int | None,
        Field(
            ge=0, le=MAX_SEED, description="The same seed and settings give the same song; empty: a new one."
        ),
        form("Seed", "seed", step=1),
    ] = None
    num_samples: Annotated[int, Field(ge=1, le=MAX_SAMPLES, description="Songs to make at once.")] = 1
    key: Annotated[
        str | None,
        BeforeValidator(_key_name),
        Field(
            description="The key of the result, e.g. 'A minor', 'Eb major', or a tonic alone ('D': major or "
            "minor); a piece you bring is transposed into it first. Empty: as the model plays.",
        ),
        form("Key", "select", choices="keys"),
    ] = None
    tempo: Annotated[
        float | None,
        Field(
            ge=MIN_QPM,
            le=MAX_QPM,
            description="Tempo of the result in quarter notes per minute (later tempo changes keep their "
            "proportion). Empty: as the model or your piece plays.",
        ),
        form("Tempo (quarter notes a minute)", "number", step=1),
    ] = None
    instruments: Annotated[
        Annotated[list[Annotated[int, Field(ge=0, le=127)]], Field(min_length=1, max_length=MAX_INSTRUMENTS)]
        | None,
        BeforeValidator(_instrument_list),
        Field(
            description="General MIDI instruments of the result's tracks in order, by number or name, e.g. "
            "'Violin, Viola, Cello' or '40,41,42' (drum tracks are skipped; tracks past the list keep theirs).",
        ),
        form("Instruments", "text"),
    ] = None

    operations: ClassVar[tuple[Operation, ...]] = (GENERATE,)

    def drawn_seed(self) -> int:
        """The seed the songs are made with: the asked one, or a fresh one recorded with them."""
        return secrets.randbelow(MAX_SEED) if self.seed is None else self.seed


def form_of(info: FieldInfo) -> Form | None:
    return next((m for m in info.metadata if isinstance(m, Form)), None)


def bounds(info: FieldInfo) -> tuple[float | None, float | None]:
    """The (minimum, maximum) a field's type allows (``ge``/``gt``, ``le``/``lt``), None where unbounded."""
    lo = hi = None
    for m in info.metadata:
        lo = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else lo
        lo = getattr(m, "gt", None) if getattr(m, "gt", None) is not None else lo
        hi = getattr(m, "le", None) if getattr(m, "le", None) is not None else hi
        hi = getattr(m, "lt", None) if getattr(m, "lt", None) is not None else hi
    return lo, hi


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one line naming each field and what is wrong with it."""
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in exc.errors())


class Family(ABC):
    """A model family: its names, its request type and the operations, checks and sampling behind them.

    A subclass sets the class attributes and implements `sample`; `resolve` fills the defaults that depend on
    the model (its styles, its own sampling settings) and checks what the type alone cannot.
    """

    name: ClassVar[str]  # the family's name in commands and the API
    label: ClassVar[str]  # as people read it
    checkpoint_model: ClassVar[str]  # the model name a checkpoint's config.json carries
    aliases: ClassVar[tuple[str, ...]] = ()  # other spellings people already use
    request: ClassVar[type[SongRequest]]
    half_precision: ClassVar[bool] = False  # whether float16 weights can sample it (`get_model`'s precision)
    # whether its sampler decodes one-sample requests through `LoadedModel.batcher` when a worker sets one
    batched_decoding: ClassVar[bool] = False
    conditioned_decoder: ClassVar[bool] = False  # whether its decoding step takes a condition vector
    style_word: ClassVar[str] = "style"  # what its styles are called (a MuseGAN's are genres)
    decoding_state: ClassVar[str] = ""  # what sampling carries from one step to the next, as the card says it
    tokenizer: ClassVar[str]  # what its training data is cut with (a `museforge.tokenizers.TOKENIZERS` name)
    fills_in: ClassVar[bool] = False  # whether its recipe can train it to fill in bars (``train --infill``)

    @property
    def operations(self) -> tuple[Operation, ...]:
        return self.request.operations

    def model_operations(self, loaded: LoadedModel) -> tuple[Operation, ...]:
        """The operations this model offers: its family's, less those it was not trained for."""
        return self.operations

    def operation(self, name: str) -> Operation:
        for op in self.operations:
            if op.name == name:
                return op
        known = ", ".join(o.name for o in self.operations)
        raise RequestError(f"a {self.label} model cannot {name!r}; it can: {known}")

    def implied_operation(self, options: dict[str, Any]) -> str | None:
        """The operation an option given belongs to alone (``infill`` -> infill, ``restyle_bars`` -> restyle),
        so a piece and such an option say what to do without naming the operation."""
        for name, value in options.items():
            info = self.request.model_fields.get(name)
            meta = None if info is None or value is None else form_of(info)
            if meta is not None and len(meta.operations or ()) == 1:
                return meta.operations[0]
        return None

    def takes(self) -> list[str]:
        """The options this family's requests take, in the order a form shows them."""
        return [n for n, _ in self._form_fields() if n != "operation"]

    def parse(self, options: dict[str, Any]) -> SongRequest:
        """A request from loose options (the API's, the form's, the CLI's or Python keywords); an option the
        family does not take, or a value out of its bounds, is a `RequestError` naming it."""
        unknown = sorted(
            k for k, v in options.items() if k not in self.request.model_fields and v is not None
        )
        if unknown:
            raise RequestError(
                f"a {self.label} model does not take {', '.join(unknown)}; it takes {', '.join(self.takes())}"
            )
        given = {k: v for k, v in options.items() if v is not None}
        try:
            request = self.request.model_validate(given)
        except ValidationError as exc:
            raise RequestError(validation_message(exc)) from exc
        self.operation(request.operation)
        return request

    def resolve(self, request: SongRequest, info: ModelInfo, limits: Limits | None = None) -> SongRequest:
        """``request`` with every default filled for this model and every check done that needs the model or
        the deployment's limits (a style it knows, bars within the deployment's cap)."""
        if limits is not None:
            self._within(request, limits)
        options = {**self.model_defaults(info), **request.model_dump(exclude_none=True)}
        for (
            name
        ) in request.model_fields_set:  # an explicit null asks for the family's default, as an omission does
            if getattr(request, name) is None:
                options.pop(name, None)
        request = self.request.model_validate({**options, "seed": request.drawn_seed()})
        self.check(request, info)
        return request

    def _within(self, request: SongRequest, limits: Limits) -> None:
        for name, info in type(request).model_fields.items():
            meta, value = form_of(info), getattr(request, name)
            if meta is None or meta.cap is None or value is None:
                continue
            if meta.operations and request.operation not in meta.operations:  # a field the operation ignores
                continue
            cap = getattr(limits, meta.cap)
            if value > cap:
                raise RequestError(f"{name} may be at most {cap:g} here, got {value:g}")
        if request.num_samples > limits.max_samples:
            raise RequestError(f"num_samples may be at most {limits.max_samples}, got {request.num_samples}")

    def length(self, bars: int, seconds: float) -> dict[str, Any]:
        """A length in this family's own terms: bars, or seconds for a family that counts time."""
        return {"bars": bars} if "bars" in self.request.model_fields else {"seconds": seconds}

    def sampling_summary(self, request: SongRequest) -> str:
        """How a request samples, in the family's own terms, for a model card ("16 bars each, temperature
        1.2, top-p 0.9")."""
        bars, seconds = getattr(request, "bars", None), getattr(request, "seconds", None)
        parts = [f"{bars} bars each" if bars is not None else f"{seconds:.0f} s each"]
        knobs = (("temperature", "temperature"), ("top_p", "top-p"))
        parts += [
            f"{label} {getattr(request, n)}" for n, label in knobs if getattr(request, n, None) is not None
        ]
        return ", ".join(parts)

    def model_defaults(self, info: ModelInfo) -> dict[str, Any]:
        """Defaults that depend on the model (its first genre, its own temperature); none by default."""
        return {}

    def choices(self, source: str, info: ModelInfo) -> list[tuple[str, str]]:
        """A field's choices that depend on the model: its styles or its tracks."""
        if source == "styles":
            return [(s, s.capitalize()) for s in info.styles]
        if source == "any_style":
            return [("", "Any style"), *self.choices("styles", info)]
        if source == "tracks":
            return [(t, t.capitalize()) for t in info.tracks]
        if source == "keys":
            from museforge.generation.output import key_choices

            return [("", "As the model plays"), *key_choices()]
        raise ValueError(f"no choices called {source!r}")

    def check(self, request: SongRequest, info: ModelInfo) -> None:
        """Checks that need the model; the base one knows its styles."""
        style = getattr(request, "style", None)
        if style is not None and style not in info.styles:
            known = ", ".join(info.styles) or f"none (this model has no {self.style_word}s)"
            raise RequestError(
                f"unknown {self.style_word} {style!r} for model {info.name}; {self.style_word}s: {known}"
            )

    def check_source(
        self, request: SongRequest, source: symusic.Score, loaded: LoadedModel, limits: Limits
    ) -> None:
        """Checks a request against its source piece at submission, where that matters; none by default."""
        return None

    def controls(self, info: ModelInfo, limits: Limits) -> list[Control]:
        """The request's fields as form controls, with this model's choices and defaults and the deployment's
        caps."""
        defaults = self.model_defaults(info)
        out = []
        for name, field_info in self._form_fields():
            meta = form_of(field_info)
            if meta is None or not self.offers(name, info):
                continue
            lo, hi = bounds(field_info)
            lo = meta.form_min if meta.form_min is not None else lo
            hi = meta.form_max if meta.form_max is not None else hi
            if meta.cap is not None:
                hi = getattr(limits, meta.cap)
            choices = (
                list(meta.choices) if isinstance(meta.choices, tuple) else self.choices(meta.choices, info)
            )
            default = defaults.get(name, field_info.default)
            default = meta.shown if default is None else default
            help_text = field_info.description or ""
            out.append(
                Control(
                    meta.control or name,
                    meta.label,
                    meta.kind,
                    default,
                    lo,
                    hi,
                    meta.step,
                    choices,
                    help_text,
                )
            )
        return out

    def offers(self, name: str, info: ModelInfo) -> bool:
        """Whether model ``info`` shows request field ``name`` as a control (every field, unless a family's
        models differ in what they can do)."""
        return True

    def _form_fields(self) -> list[tuple[str, FieldInfo]]:
        """The request's fields in form order: the family's own as it declares them, then the shared ones."""
        fields = list(self.request.model_fields.items())
        return [f for f in fields if f[0] not in SongRequest.model_fields] + [
            f for f in fields if f[0] in SongRequest.model_fields
        ]

    def operation_controls(self, operation: str, info: ModelInfo) -> list[str]:
        """The names of the controls ``operation`` takes on model ``info``, in form order."""
        out = []
        for name, field_info in self._form_fields():
            meta = form_of(field_info)
            if meta is None or not self.offers(name, info):
                continue
            if not meta.operations or operation in meta.operations:
                out.append(meta.control or name)
        return out

    def sample(
        self,
        loaded: LoadedModel,
        request: SongRequest,
        source: symusic.Score | None = None,
        progress: ProgressFn | None = None,
        originality: OriginalityIndex | str | Path | None = None,
    ) -> list[GeneratedSong]:
        """Songs for a resolved request (see `resolve`); ``source`` is the piece a continue, re-style or
        accompany starts from. The family draws them; the output controls every family shares (key, tempo,
        instruments) shape them (`museforge.families.output`)."""
        from museforge.families.output import shaped_songs

        def draw(asked: SongRequest, piece: symusic.Score | None) -> list[GeneratedSong]:
            return self.draw(loaded, asked, piece, progress, originality)

        return shaped_songs(request, source, draw)

    @abstractmethod
    def draw(
        self,
        loaded: LoadedModel,
        request: SongRequest,
        source: symusic.Score | None = None,
        progress: ProgressFn | None = None,
        originality: OriginalityIndex | str | Path | None = None,
    ) -> list[GeneratedSong]:
        """The family's own sampling of `sample`: songs as the model writes them, before the output controls."""

    # Training: each family's ``train.py`` holds its presets and recipe, imported only to train (it needs torch).

    @property
    @abstractmethod
    def presets(self) -> dict[str, Recipe]:
        """The family's training presets by name: model size, window and training knobs."""

    @property
    @abstractmethod
    def data_fields(self) -> frozenset[str]:
        """Model-config fields its recipe takes from the data, never from a checkpoint it fine-tunes."""

    @property
    def data_filters(self) -> frozenset[str]:
        """Model overrides that choose the training data rather than the model; none by default."""
        return frozenset()

    def recipe(self, preset: str) -> Recipe:
        """The preset called ``preset``, or a `ValueError` listing the family's presets."""
        if preset not in self.presets:
            raise ValueError(f"unknown preset {preset!r} for {self.name}; known: {', '.join(self.presets)}")
        return self.presets[preset]

    def styles(self, model: nn.Module, tokenizer: Any) -> tuple[str, ...]:
        """What the model can be asked for by `style_word`: its tokenizer's styles (none for a tokenizer
        without them)."""
        return tuple(getattr(tokenizer.config, "styles", ()))

    def probe_logits(self, model: nn.Module, probe: Tensor, gen: torch.Generator) -> Tensor:
        """Next-token logits [1, T, V] of ``probe`` [1, T], for the float16 check (`half_precision`); ``gen``
        draws whatever else the model's decoder reads."""
        return model(probe)[0]

    # The model card (`museforge.lab.model_card`): what the family measures beyond its samples.
    card_heading: ClassVar[str | None] = None  # the heading of the section `card_remeasure` rewrites

    def card_measures(
        self, ckpt: Checkpoint, run_dir: Path, data_dir: Path, options: ShipOptions, log: Log
    ) -> CardMeasures | None:
        """The family's own card measurements of a shipped run; None: the held-out token likelihood alone,
        which the card measures with `scorer`."""
        return None

    def card_remeasure(
        self,
        model_dir: Path,
        loaded: LoadedModel,
        served: LoadedModel,
        data_dir: Path,
        options: ShipOptions,
        log: Log,
    ) -> list[str]:
        """The card's `card_heading` section measured again by ``models resample`` (sampling changed), timed
        with ``served``, the model at the app's precision; its first line is the heading."""
        raise NotImplementedError(f"a {self.label}'s card has no section of its own to re-measure")

    def sequence_inputs(
        self, model: nn.Module, params: dict[str, Any], length: int
    ) -> dict[str, Tensor] | None:
        """What conditions a song this model made with ``params`` besides its tokens, per position
        (``{name: [length, ...]}``, passed to the model by name), so `museforge.training.preference` can score
        it again; None: the family's songs are not token sequences it can score (no preference fine-tuning)."""
        return None

    def scorer(self, model: nn.Module, tokenizer: Any) -> TokenScorer | None:
        """How the model scores held-out tokens (`museforge.models.scoring`); None for a family without a token
        likelihood (a GAN; a VAE reports its reconstruction NLL in its own card section)."""
        return None

    @abstractmethod
    def model_class(self) -> type[nn.Module]:
        """The family's network (imported here, on first use: the rest of the family needs no torch)."""

    @abstractmethod
    def prepare_training(
        self, data_dir: Path, preset: str, out_dir: Path, options: RunOptions
    ) -> TrainingRun:
        """Tokenize ``data_dir`` if needed and build the datasets, model and trainer of ``preset``."""
