"""What each model family lets a person control and do, declared once for the API, the forms and the jobs.

A `Family` lists its controls (rendered as form fields and listed by ``GET /api/v1/models``), its operations
(generate from nothing, continue a piece, and the re-style / accompany operations of families that have them),
how a request becomes checked job parameters, and how a job runs through the library. The app offers exactly the
families registered here whose models are installed: a new family (MuseMorphose's re-style, MuseGAN's
accompaniment) appears in the API and the pages when its `Family` is registered with `register_family` and a
model of it is shipped.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import symusic
from pydantic import BaseModel, ConfigDict, Field

from museforge.defaults import DEFAULT_GUIDANCE, MAX_GUIDANCE
from museforge.generation.api import (
    GeneratedSong,
    LoadedModel,
    attribute_plan,
    generate_song,
    restyle_song,
)
from museforge.generation.musegan import given_rolls, parse_track_map
from museforge.models.checkpoint import CONFIG_FILE
from museforge.models.musemorphose import MuseMorphoseConfig
from museforge.models.performance_rnn import DENSITY_BINS, N_DENSITY_CLASSES
from museforge.models.zoo import ModelInfo
from museforge.tokenizers.attributes import N_ATTRIBUTE_CLASSES

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MAX_SEED = 2**31 - 1
MAX_CANDIDATES = 8  # MuseMorphose tries per bar one request may ask for (4 take about 2.5x as long as 1)
ProgressFn = Callable[[float], None]


class JobRequest(BaseModel):
    """A generation request, as the JSON API and the forms send it. Which fields apply depends on the model's
    family; a field the family does not take is refused with a message naming the ones it does. NaN and
    infinity (which Python's JSON parser accepts, and lax parsing reads from "nan" strings) are refused as
    not finite, so a limit check never sees them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    model: str | None = Field(None, description="Model name (default: the default model).")
    operation: str = Field(
        "generate", description="generate, continue, or a family's own (restyle, accompany)."
    )
    style: str | None = Field(None, description="Style/genre token, for models trained with styles.")
    bars: int | None = Field(None, description="Bars of new music (bar-based families).")
    seconds: float | None = Field(None, description="Seconds of new music (time-based families).")
    temperature: float = Field(1.0, gt=0, le=3)
    top_k: int | None = Field(None, ge=1, le=1000)
    top_p: float | None = Field(0.95, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    num_samples: int = Field(1, ge=1)
    rhythm: list[int | None] | None = Field(
        None, description="Rhythmic-intensity class per bar (0-7, null: free)."
    )
    polyphony: list[int | None] | None = Field(None, description="Polyphony class per bar (0-7, null: free).")
    density: int | None = Field(None, description="Note-density class 0-7 (Performance RNN).")
    pitch_classes: list[str] | None = Field(
        None, description="Pitch classes to favour, e.g. ['C', 'E', 'G']."
    )
    source_upload: str | None = Field(
        None, description="An upload of yours to continue, re-style or accompany."
    )
    source_tune: str | None = Field(
        None,
        description="The X: number of the tune to use when source_upload is an ABC file of several tunes.",
    )
    source_song: str | None = Field(None, description="A song of yours to continue, re-style or accompany.")
    primer_bars: int | None = Field(None, ge=1, description="Bars of the source used as the primer.")
    tracks: dict[str, int] | None = Field(
        None,
        description="Accompany: which tracks of your piece to keep, as {model track name: your track index}, "
        "e.g. {'soprano': 0}; the model plays the other tracks.",
    )
    binarize: Literal["threshold", "bernoulli"] | None = Field(
        None, description="MuseGAN: how its soft piano roll becomes notes (default threshold)."
    )
    rhythm_shift: int | None = Field(
        None, description="Re-style: classes (-7 to +7) added to each re-styled bar's rhythmic intensity."
    )
    polyphony_shift: int | None = Field(
        None, description="Re-style: classes (-7 to +7) added to each re-styled bar's polyphony."
    )
    candidates: int | None = Field(
        None,
        ge=1,
        le=MAX_CANDIDATES,
        description="MuseMorphose: tries per bar; the one nearest the bar's asked rhythm/polyphony is kept "
        "(default 1; 4 tries take about 2.5 times as long as 1).",
    )
    guidance: float | None = Field(
        None,
        ge=0,
        le=MAX_GUIDANCE,
        description="Re-style (MuseMorphose): how much to amplify the asked change against the piece's own "
        f"classes (0: the model alone; default {DEFAULT_GUIDANCE:g}; truer control, twice the time).",
    )
    restyle_bars: str | list[int] | None = Field(
        None,
        description="Re-style: the bars to change, counted from 1, e.g. '5-8', '1,3,5-8' or [5, 6]; "
        "default every bar. The others stay note for note. With rhythm/polyphony lists, those give one "
        "class per re-styled bar (null keeps the bar's own).",
    )


class RequestError(ValueError):
    """A request the model cannot serve; the message says what to change."""


@dataclass(frozen=True)
class Control:
    """One form field / API parameter."""

    name: str
    label: str
    # select | int | float | seed | bar_plan | pitch_classes | track_map | shift | bar_range | strength | count
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
    name: str
    label: str
    needs_source: bool
    description: str
    controls: tuple[str, ...] = ()  # the family controls the operation takes (a family lacking one skips it)


@dataclass(frozen=True)
class Limits:
    """Request limits of the deployment (from the settings)."""

    max_bars: int
    max_seconds: float
    max_samples: int


@dataclass(frozen=True)
class Family:
    """A model family as the app sees it."""

    name: str  # the checkpoint's model name (config.json "model")
    label: str
    operations: tuple[Operation, ...]
    controls: Callable[[ModelInfo, Limits], list[Control]]
    check: Callable[[JobRequest, ModelInfo, Limits], dict[str, Any]]  # -> job parameters
    run: Callable[[LoadedModel, dict[str, Any], symusic.Score | None, ProgressFn], list[GeneratedSong]]
    # checks job parameters against the source piece at submission (raises RequestError), where that matters
    check_source: Callable[[dict[str, Any], symusic.Score, LoadedModel, Limits], None] | None = None

    def operation(self, name: str) -> Operation:
        for op in self.operations:
            if op.name == name:
                return op
        known = ", ".join(o.name for o in self.operations)
        raise RequestError(f"a {self.label} model cannot {name!r}; it can: {known}")


SAMPLING = ("temperature", "top_p", "candidates", "seed")
GENERATE = Operation(
    "generate", "Generate", False, "New music from nothing but the controls.",
    ("style", "bars", "seconds", "density", "pitch_classes", "binarize", *SAMPLING, "attributes"),
)  # fmt: skip
CONTINUE = Operation(
    "continue", "Continue", True, "Keep the start of a piece and let the model carry on.",
    ("bars", "seconds", "primer_bars", "style", "density", "pitch_classes", *SAMPLING),
)  # fmt: skip


PRIMER_BARS = Control("primer_bars", "Bars of the piece to keep", "count", None, 1, None, 1,
                      help="Continue: the model keeps this many bars from the start of the piece and carries on "
                      "from there; empty: all of it.")  # fmt: skip


def _sampling_controls(temperature: float = 1.0, top_p: float = 0.95) -> list[Control]:
    return [
        Control("temperature", "Temperature", "float", temperature, 0.5, 1.5, 0.05,
                help="Lower: safer, more repetitive. Higher: more adventurous."),
        Control("top_p", "Nucleus (top-p)", "float", top_p, 0.5, 1.0, 0.01,
                help="Sample only from the most likely tokens holding this share of probability."),
        Control("seed", "Seed", "seed", None, 0, MAX_SEED, 1,
                help="The same seed and settings give the same song; empty: a new one."),
    ]  # fmt: skip


def _common(req: JobRequest, limits: Limits) -> dict[str, Any]:
    if req.num_samples > limits.max_samples:
        raise RequestError(f"num_samples may be at most {limits.max_samples}, got {req.num_samples}")
    if req.primer_bars is not None and req.source_song is None and req.source_upload is None:
        raise RequestError("primer_bars needs a source piece (source_upload or source_song)")
    seed = req.seed if req.seed is not None else secrets.randbelow(MAX_SEED)
    return {
        "temperature": req.temperature, "top_k": req.top_k, "top_p": req.top_p, "seed": seed,
        "num_samples": req.num_samples,
    }  # fmt: skip


RESTYLE_FIELDS = ("rhythm_shift", "polyphony_shift", "restyle_bars", "guidance")


def _refuse(req: JobRequest, fields: tuple[str, ...], label: str, takes: str) -> None:
    given = [f for f in fields if getattr(req, f) is not None]
    if given:
        raise RequestError(f"a {label} model does not take {', '.join(given)}; it takes {takes}")


# ---- REMI Transformer ---------------------------------------------------------------------------------------


def _remi_controls(info: ModelInfo, limits: Limits) -> list[Control]:
    styles = [("", "Any style")] + [(s, s.capitalize()) for s in info.styles]
    return [
        Control("style", "Style", "select", "", choices=styles, help="The kind of music the model imitates."),
        Control("bars", "Bars", "int", 16, 1, limits.max_bars, 1, help="Length of the new music in bars."),
        PRIMER_BARS,
        *_sampling_controls(),
        Control("attributes", "Shape bar by bar", "bar_plan", None, 0, N_ATTRIBUTE_CLASSES - 1, 1,
                help="Rhythmic intensity and polyphony per bar (0 calm/thin ... 7 busy/full); "
                "'free' lets the model choose."),
    ]  # fmt: skip


def _check_classes(values: list[int | None] | None, label: str, bars: int) -> list[int | None] | None:
    if values is None:
        return None
    if len(values) > bars:
        raise RequestError(f"{label} has {len(values)} entries but only {bars} bars are generated")
    for i, v in enumerate(values):
        if v is not None and not 0 <= v < N_ATTRIBUTE_CLASSES:
            raise RequestError(f"{label} of bar {i + 1} must be 0 to {N_ATTRIBUTE_CLASSES - 1}, got {v}")
    return values if any(v is not None for v in values) else None


def _remi_check(req: JobRequest, info: ModelInfo, limits: Limits) -> dict[str, Any]:
    _refuse(req, ("seconds", "density", "pitch_classes", "tracks", "binarize", "candidates", *RESTYLE_FIELDS),
            "REMI Transformer", "style, bars, per-bar rhythm/polyphony and the sampling settings")  # fmt: skip
    bars = 16 if req.bars is None else req.bars
    if not 1 <= bars <= limits.max_bars:
        raise RequestError(f"bars must be 1 to {limits.max_bars}, got {bars}")
    style = req.style or None
    if style is not None and style not in info.styles:
        known = ", ".join(info.styles) or "none (this model has no styles)"
        raise RequestError(f"unknown style {style!r} for model {info.name}; styles: {known}")
    return {
        **_common(req, limits), "style": style, "bars": bars, "primer_bars": req.primer_bars,
        "rhythm": _check_classes(req.rhythm, "rhythm", bars),
        "polyphony": _check_classes(req.polyphony, "polyphony", bars),
    }  # fmt: skip


def _remi_run(
    loaded: LoadedModel, params: dict[str, Any], source: symusic.Score | None, progress: ProgressFn
) -> list[GeneratedSong]:
    plan = attribute_plan(params["rhythm"], params["polyphony"])
    return generate_song(
        loaded, style=params["style"], bars=params["bars"], temperature=params["temperature"],
        top_k=params["top_k"], top_p=params["top_p"], seed=params["seed"], num_samples=params["num_samples"],
        primer=source, primer_bars=params["primer_bars"] if source is not None else None,
        attributes=plan or None, progress=progress,
    )  # fmt: skip


# ---- Performance RNN ----------------------------------------------------------------------------------------


def _density_label(k: int) -> str:
    if k == 0:
        return f"sparse (< {DENSITY_BINS[0]:g} notes/s)"
    if k == N_DENSITY_CLASSES - 1:
        return f"very dense (≥ {DENSITY_BINS[-1]:g} notes/s)"
    return f"{DENSITY_BINS[k - 1]:g}-{DENSITY_BINS[k]:g} notes/s"


def _perf_controls(info: ModelInfo, limits: Limits) -> list[Control]:
    density = [("", "Model decides")] + [(str(k), _density_label(k)) for k in range(N_DENSITY_CLASSES)]
    return [
        Control("seconds", "Seconds", "float", 20.0, 1.0, limits.max_seconds, 1.0, help="Length of the new music."),
        Control("density", "Note density", "select", "", choices=density, help="How many notes per second."),
        Control("pitch_classes", "Favour pitch classes", "pitch_classes", None,
                choices=[(p, p) for p in PITCH_CLASSES], help="Tick the notes of a chord or scale; none: free."),
        *_sampling_controls(),
    ]  # fmt: skip


def _perf_check(req: JobRequest, info: ModelInfo, limits: Limits) -> dict[str, Any]:
    _refuse(req, ("bars", "style", "rhythm", "polyphony", "primer_bars", "tracks", "binarize", "candidates",
                  *RESTYLE_FIELDS),
            "Performance RNN", "seconds, note density, pitch classes and the sampling settings")  # fmt: skip
    seconds = 20.0 if req.seconds is None else float(req.seconds)
    if not 1.0 <= seconds <= limits.max_seconds:
        raise RequestError(f"seconds must be 1 to {limits.max_seconds:g}, got {seconds:g}")
    if req.density is not None and not 0 <= req.density < N_DENSITY_CLASSES:
        raise RequestError(f"density must be a class 0 to {N_DENSITY_CLASSES - 1}, got {req.density}")
    pcs = None
    if req.pitch_classes:
        unknown = [p for p in req.pitch_classes if p not in PITCH_CLASSES]
        if unknown:
            raise RequestError(f"unknown pitch classes {unknown}; use {', '.join(PITCH_CLASSES)}")
        pcs = sorted(set(req.pitch_classes), key=PITCH_CLASSES.index)
    return {**_common(req, limits), "seconds": seconds, "density": req.density, "pitch_classes": pcs}


def _perf_run(
    loaded: LoadedModel, params: dict[str, Any], source: symusic.Score | None, progress: ProgressFn
) -> list[GeneratedSong]:
    pcs = params["pitch_classes"]
    histogram = None if not pcs else [1.0 if p in pcs else 0.0 for p in PITCH_CLASSES]
    return generate_song(
        loaded, seconds=params["seconds"], temperature=params["temperature"], top_k=params["top_k"],
        top_p=params["top_p"], seed=params["seed"], num_samples=params["num_samples"], primer=source,
        density=params["density"], pitch_histogram=histogram, progress=progress,
    )  # fmt: skip


# ---- MuseGAN ------------------------------------------------------------------------------------------------

ACCOMPANY = Operation(
    "accompany",
    "Accompany",
    True,
    "Keep tracks of a piece (e.g. its melody) and let the model play the others.",
    ("tracks", "style", "bars", "binarize", "seed"),
)
MUSEGAN_DEFAULT_BARS = 8  # two of its 4-bar phrases
MUSEGAN_FIXED = ("seconds", "density", "pitch_classes", "rhythm", "polyphony", "primer_bars", "temperature",
                 "top_k", "top_p", "candidates", *RESTYLE_FIELDS)  # fmt: skip


def _musegan_controls(info: ModelInfo, limits: Limits) -> list[Control]:
    return [
        Control("style", "Genre", "select", info.styles[0] if info.styles else "",
                choices=[(s, s.capitalize()) for s in info.styles], help="The kind of music the band plays."),
        Control("bars", "Bars", "int", MUSEGAN_DEFAULT_BARS, 1, limits.max_bars, 1,
                help="Length in bars (4-bar phrases chained); when accompanying, at most this much of the piece."),
        Control("binarize", "Note choice", "select", "threshold",
                choices=[("threshold", "Confident notes only"), ("bernoulli", "Sampled (looser, busier)")],
                help="How the model's soft piano roll becomes notes."),
        Control("seed", "Seed", "seed", None, 0, MAX_SEED, 1,
                help="The same seed and settings give the same song; empty: a new one."),
        Control("tracks", "Tracks to keep", "track_map", None, choices=[(t, t.capitalize()) for t in info.tracks],
                help="Accompany: for each model track, the track of your piece it keeps (or none: generated)."),
    ]  # fmt: skip


def _musegan_check(req: JobRequest, info: ModelInfo, limits: Limits) -> dict[str, Any]:
    given = sorted(f for f in MUSEGAN_FIXED if f in req.model_fields_set and getattr(req, f) is not None)
    if given:
        raise RequestError(
            f"a MuseGAN model does not take {', '.join(given)}; it takes style (genre), bars, binarize, seed, "
            "and tracks to accompany"
        )
    accompanying = req.operation == "accompany"
    bars = req.bars
    if bars is None:
        bars = limits.max_bars if accompanying else MUSEGAN_DEFAULT_BARS
    if not 1 <= bars <= limits.max_bars:
        raise RequestError(f"bars must be 1 to {limits.max_bars}, got {bars}")
    style = req.style or (info.styles[0] if info.styles else None)
    if style is not None and style not in info.styles:
        known = ", ".join(info.styles) or "none (this model has no genres)"
        raise RequestError(f"unknown genre {style!r} for model {info.name}; genres: {known}")
    tracks = None
    if not accompanying and req.tracks is not None:
        raise RequestError("tracks are for the accompany operation: generate makes every track")
    if accompanying:
        if not req.tracks:
            raise RequestError(
                f"accompany needs tracks: which track of your piece each kept model track plays, e.g. "
                f"{{{info.tracks[0]!r}: 0}}; model tracks: {', '.join(info.tracks)}"
            )
        bad = {k: v for k, v in req.tracks.items() if v < 0}
        if bad:
            raise RequestError(f"track indices count from 0, got {bad}")
        try:
            mapping = parse_track_map(req.tracks, info.tracks)
        except ValueError as exc:
            raise RequestError(str(exc)) from exc
        if len(mapping) >= len(info.tracks):
            raise RequestError(
                f"all {len(info.tracks)} model tracks are kept: leave at least one for the model to play"
            )
        tracks = {info.tracks[k]: v for k, v in sorted(mapping.items())}
    common = _common(req, limits)
    return {
        "seed": common["seed"], "num_samples": common["num_samples"], "style": style, "bars": bars,
        "binarize": req.binarize or "threshold", "tracks": tracks,
    }  # fmt: skip


def _musegan_check_source(
    params: dict[str, Any], source: symusic.Score, loaded: LoadedModel, limits: Limits
) -> None:
    """Every kept track must exist in the piece and hold notes the model's roll can show."""
    tok = loaded.tokenizer
    names = [t.name for t in tok.config.tracks]
    try:
        given_rolls(source, tok, parse_track_map(params["tracks"], names), max_bars=params["bars"])
    except ValueError as exc:
        raise RequestError(f"cannot accompany this piece: {exc}") from exc


def _musegan_run(
    loaded: LoadedModel, params: dict[str, Any], source: symusic.Score | None, progress: ProgressFn
) -> list[GeneratedSong]:
    return generate_song(
        loaded, style=params["style"], bars=params["bars"], seed=params["seed"], num_samples=params["num_samples"],
        binarize=params["binarize"], accompany=source, tracks=params["tracks"] if source is not None else None,
        progress=progress,
    )  # fmt: skip


# ---- MuseMorphose -------------------------------------------------------------------------------------------

RESTYLE = Operation(
    "restyle",
    "Re-style",
    True,
    "Keep a piece's melody and harmony and play its bars busier or calmer, fuller or thinner.",
    ("rhythm_shift", "polyphony_shift", "restyle_bars", "style", "guidance", "candidates", "seed"),
)
MAX_SHIFT = N_ATTRIBUTE_CLASSES - 1
BAR_RANGE = re.compile(r"(\d{1,9})(?:-(\d{1,9}))?", re.ASCII)  # "5" or "5-8"
MORPH_FIXED = ("seconds", "density", "pitch_classes", "tracks", "binarize", "top_k")
MORPH_TAKES = (
    "style, bars, per-bar rhythm/polyphony, temperature, top_p, candidates and seed; to re-style, rhythm_shift, "
    "polyphony_shift, restyle_bars, guidance and per-bar rhythm/polyphony"
)


def _morph_sampling(info: ModelInfo) -> tuple[float, float]:
    """The checkpoint's own temperature and top-p (the paper samples MuseMorphose at 1.2 / 0.9), so the app
    samples each model as its card measures it."""
    config = json.loads((info.path / CONFIG_FILE).read_text(encoding="utf-8")).get("config", {})
    return (
        float(config.get("temperature", MuseMorphoseConfig.temperature)),
        float(config.get("top_p", MuseMorphoseConfig.top_p)),
    )


def _morph_controls(info: ModelInfo, limits: Limits) -> list[Control]:
    styles = [("", "Any style")] + [(s, s.capitalize()) for s in info.styles]
    shift_help = "Re-style: classes added to each re-styled bar's {} (-{} to +{}; 0 keeps it)."
    return [
        Control("style", "Style", "select", "", choices=styles, help="The kind of music the model imitates."),
        Control("bars", "Bars", "int", 16, 1, limits.max_bars, 1, help="Length of the new music in bars."),
        PRIMER_BARS,
        *_sampling_controls(*_morph_sampling(info)),
        Control("attributes", "Shape bar by bar", "bar_plan", None, 0, N_ATTRIBUTE_CLASSES - 1, 1,
                help="Rhythmic intensity and polyphony per bar (0 calm/thin ... 7 busy/full); "
                "'free' keeps the previous bar's."),
        Control("rhythm_shift", "Rhythm shift", "shift", 0, -MAX_SHIFT, MAX_SHIFT, 1,
                help=shift_help.format("rhythmic intensity (+ busier, - calmer)", MAX_SHIFT, MAX_SHIFT)),
        Control("polyphony_shift", "Polyphony shift", "shift", 0, -MAX_SHIFT, MAX_SHIFT, 1,
                help=shift_help.format("polyphony (+ fuller, - thinner)", MAX_SHIFT, MAX_SHIFT)),
        Control("candidates", "Tries per bar", "int", 1, 1, MAX_CANDIDATES, 1,
                help="Each bar is sampled this many times and the one nearest its asked rhythm and polyphony is "
                "kept, an attribute you left unshifted counting most: truer control, slower (4 tries take about "
                "2.5 times as long as 1)."),
        Control("guidance", "Guidance", "strength", DEFAULT_GUIDANCE, 0, MAX_GUIDANCE, 0.5,
                help="Re-style: how much to amplify the asked change (0: the model alone). Truer rhythm and "
                "polyphony, a little less like the piece, twice the time."),
        Control("restyle_bars", "Bars to re-style", "bar_range", "",
                help="Re-style: bar numbers such as 5-8 or 1,3,5-8; empty: every bar. The others stay note for note."),
    ]  # fmt: skip


def _bar_ranges(spec: str | list[int]) -> list[tuple[int, int]]:
    """``restyle_bars`` as sorted, merged (first, last) ranges of bar numbers counted from 1."""
    ranges: list[tuple[int, int]] = []
    parts = spec.replace(" ", "").split(",") if isinstance(spec, str) else [str(b) for b in spec]
    for part in filter(None, parts):
        match = BAR_RANGE.fullmatch(part)
        if match is None:
            raise RequestError(
                f"restyle_bars must be bar numbers counted from 1 or ranges, like '5-8' or '1,3,5-8'; "
                f"got {part!r}"
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


def _restyled(spec: str | None, n_bars: int) -> list[int]:
    """The 0-based bars a restyle changes in a piece of ``n_bars`` bars (all when ``spec`` is None)."""
    if spec is None:
        return list(range(n_bars))
    ranges = _bar_ranges(spec)
    if ranges[-1][1] > n_bars:
        raise RequestError(
            f"restyle_bars asks for bar {ranges[-1][1]}, but the piece has {n_bars} bar{'s' * (n_bars != 1)}"
        )
    return [b - 1 for first, last in ranges for b in range(first, last + 1)]


def _restyle_check(req: JobRequest) -> dict[str, Any]:
    """What to change in the source's bars: a shift or explicit classes per attribute, and which bars."""
    if req.bars is not None or req.primer_bars is not None:
        raise RequestError(
            "restyle keeps the piece's length: leave out bars and primer_bars (restyle_bars picks the bars)"
        )
    out: dict[str, Any] = {}
    for attr in ("rhythm", "polyphony"):
        shift, classes = getattr(req, f"{attr}_shift"), getattr(req, attr)
        if shift is not None and classes is not None:
            raise RequestError(
                f"give {attr}_shift (one shift for every re-styled bar) or {attr} (a class per re-styled bar), "
                "not both"
            )
        if shift is not None and not -MAX_SHIFT <= shift <= MAX_SHIFT:
            raise RequestError(f"{attr}_shift must be -{MAX_SHIFT} to +{MAX_SHIFT} classes, got {shift}")
        for i, k in enumerate(classes or []):
            if k is not None and not 0 <= k < N_ATTRIBUTE_CLASSES:
                raise RequestError(
                    f"{attr} of re-styled bar {i + 1} must be a class 0 to {N_ATTRIBUTE_CLASSES - 1}, got {k}"
                )
        out[f"{attr}_shift"] = shift
        out[attr] = classes if classes and any(k is not None for k in classes) else None
    if all(v is None for v in out.values()):
        raise RequestError(
            f"restyle needs something to change: rhythm_shift or polyphony_shift (-{MAX_SHIFT} to +{MAX_SHIFT}), "
            "or rhythm/polyphony classes per re-styled bar"
        )
    spec = req.restyle_bars
    ranges = None if spec is None else _bar_ranges(spec)
    out["restyle_bars"] = (
        None if ranges is None else ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)
    )
    return out


def _morph_check(req: JobRequest, info: ModelInfo, limits: Limits) -> dict[str, Any]:
    _refuse(req, MORPH_FIXED, "MuseMorphose", MORPH_TAKES)
    style = req.style or None
    if style is not None and style not in info.styles:
        known = ", ".join(info.styles) or "none (this model has no styles)"
        raise RequestError(f"unknown style {style!r} for model {info.name}; styles: {known}")
    temperature, top_p = _morph_sampling(info)
    common = _common(req, limits)
    params = {
        "style": style, "seed": common["seed"], "num_samples": common["num_samples"],
        "temperature": req.temperature if "temperature" in req.model_fields_set else temperature,
        "top_p": req.top_p if "top_p" in req.model_fields_set and req.top_p is not None else top_p,
        "candidates": req.candidates or 1,
    }  # fmt: skip
    if req.operation == "restyle":
        guidance = DEFAULT_GUIDANCE if req.guidance is None else req.guidance
        return {**params, **_restyle_check(req), "guidance": guidance}
    given = [f for f in RESTYLE_FIELDS if getattr(req, f) is not None]
    if given:
        raise RequestError(
            f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for the restyle operation"
        )
    bars = 16 if req.bars is None else req.bars
    if not 1 <= bars <= limits.max_bars:
        raise RequestError(f"bars must be 1 to {limits.max_bars}, got {bars}")
    return {
        **params, "bars": bars, "primer_bars": req.primer_bars,
        "rhythm": _check_classes(req.rhythm, "rhythm", bars),
        "polyphony": _check_classes(req.polyphony, "polyphony", bars),
    }  # fmt: skip


def _morph_check_source(
    params: dict[str, Any], source: symusic.Score, loaded: LoadedModel, limits: Limits
) -> None:
    """A piece to re-style must hold notes and the bars asked for, no more of them than a generation may have
    (`Limits.max_bars`: re-styled bars are re-played one by one), and no more classes than re-styled bars."""
    if params["operation"] != "restyle":
        return
    n_bars = len(loaded.tokenizer.encode(source).bar_starts)
    if n_bars == 0:
        raise RequestError("cannot re-style this piece: it holds no notes")
    selected = len(_restyled(params["restyle_bars"], n_bars))
    if selected > limits.max_bars:
        raise RequestError(
            f"this would re-style {selected} bars, more than the {limits.max_bars} one job may play: "
            "pick the bars with restyle_bars, e.g. '1-16'"
        )
    for attr in ("rhythm", "polyphony"):
        if params[attr] is not None and len(params[attr]) > selected:
            raise RequestError(
                f"{attr} gives {len(params[attr])} classes but only {selected} bar"
                f"{' is' if selected == 1 else 's are'} re-styled: one class per re-styled bar"
            )


def _restyle_run(
    loaded: LoadedModel, params: dict[str, Any], source: symusic.Score, progress: ProgressFn
) -> list[GeneratedSong]:
    """The request's bars and classes (a shift, or classes for the first re-styled bars) for `restyle_song`."""
    n_bars = len(loaded.tokenizer.encode(source).bar_starts)
    selected = _restyled(params["restyle_bars"], n_bars)
    changes = {
        attr: params[f"{attr}_shift"] if params[attr] is None
        else [*params[attr], *[None] * (len(selected) - len(params[attr]))]
        for attr in ("rhythm", "polyphony")
    }  # fmt: skip
    return restyle_song(
        loaded, source, **changes, bars=selected, style=params["style"], seed=params["seed"],
        temperature=params["temperature"], top_p=params["top_p"], num_samples=params["num_samples"],
        candidates=params["candidates"], guidance=params["guidance"], progress=progress,
    )  # fmt: skip


def _morph_run(
    loaded: LoadedModel, params: dict[str, Any], source: symusic.Score | None, progress: ProgressFn
) -> list[GeneratedSong]:
    if params["operation"] == "restyle":
        assert source is not None  # restyle needs a source: checked at submission
        return _restyle_run(loaded, params, source, progress)
    plan = attribute_plan(params["rhythm"], params["polyphony"])
    return generate_song(
        loaded, style=params["style"], bars=params["bars"], temperature=params["temperature"],
        top_p=params["top_p"], seed=params["seed"], num_samples=params["num_samples"], primer=source,
        primer_bars=params["primer_bars"] if source is not None else None, attributes=plan or None,
        candidates=params["candidates"], progress=progress,
    )  # fmt: skip


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    """Make a model family usable in the app (its models then appear in the API and the forms)."""
    FAMILIES[family.name] = family


register_family(
    Family("transformer", "REMI Transformer", (GENERATE, CONTINUE), _remi_controls, _remi_check, _remi_run)
)
register_family(
    Family("performance_rnn", "Performance RNN", (GENERATE, CONTINUE), _perf_controls, _perf_check, _perf_run)
)
register_family(
    Family(
        "musegan", "MuseGAN", (GENERATE, ACCOMPANY), _musegan_controls, _musegan_check, _musegan_run,
        check_source=_musegan_check_source,
    )
)  # fmt: skip
register_family(
    Family(
        "musemorphose", "MuseMorphose", (GENERATE, CONTINUE, RESTYLE), _morph_controls, _morph_check,
        _morph_run, check_source=_morph_check_source,
    )
)  # fmt: skip
