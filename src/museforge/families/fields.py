"""Request fields several families share, each with its one default, bounds, parsing and form metadata.

A field accepts what people type as well as what programs send: ``"2,2,-,6"`` or ``[2, 2, None, 6]`` for a
per-bar plan, ``"C,E,G"`` or ``["C", "E", "G"]`` for pitch classes, ``"piano:0"`` or ``{"piano": 0}`` for a
track map, so the command line, the form and the JSON API share one parser.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from museforge.defaults import N_ATTRIBUTE_CLASSES
from museforge.families.base import form

PITCH_CLASSES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
_NATURALS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
MAX_BARS = 1024  # what any request may ask for; a deployment caps it lower (`Limits.max_bars`)
MAX_SECONDS = 3600.0
MAX_CLASS = N_ATTRIBUTE_CLASSES - 1


def _comma_list(value: Any) -> Any:
    return [v.strip() for v in value.split(",")] if isinstance(value, str) else value


def _bar_classes(value: Any) -> Any:
    """'2,2,-,6' -> [2, 2, None, 6]: one class per bar, '-' or nothing where the model chooses."""
    items = _comma_list(value)
    if not isinstance(items, list):
        return items
    out = [None if v in ("", "-", None) else v for v in items]
    return out if any(v is not None for v in out) else None


def pitch_class(name: Any) -> str:
    """A pitch class (C, C#, Db, ... or 0..11) as its name with sharps."""
    text = str(name).strip()
    if text.isdigit() and 0 <= int(text) < 12:
        return PITCH_CLASSES[int(text)]
    letter, accidentals = text[:1].upper(), text[1:]
    if letter not in _NATURALS or any(a not in "#b" for a in accidentals):
        raise ValueError(f"unknown pitch class {name!r}: use names like C, F#, Bb or numbers 0..11")
    return PITCH_CLASSES[(_NATURALS[letter] + accidentals.count("#") - accidentals.count("b")) % 12]


def _pitch_classes(value: Any) -> Any:
    items = _comma_list(value)
    if not isinstance(items, list):
        return items
    names = {pitch_class(v) for v in items if str(v).strip()}
    if not names:
        raise ValueError("names no pitch class")
    return sorted(names, key=PITCH_CLASSES.index)


def _track_map(value: Any) -> Any:
    """'piano:0,guitar:2' -> {'piano': 0, 'guitar': 2}."""
    if not isinstance(value, str):
        return value
    out: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in value.split(","))):
        name, sep, index = pair.partition(":")
        if not sep:
            raise ValueError(f"tracks are model track:piece track pairs like 'piano:0', got {pair!r}")
        out[name.strip()] = index.strip()
    return out


def blank_is_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


Style = Annotated[
    str | None,
    BeforeValidator(blank_is_none),
    Field(description="The kind of music the model imitates (one of the model's styles)."),
    form("Style", "select", choices="any_style"),
]
Bars = Annotated[
    int,
    Field(ge=1, le=MAX_BARS, description="Length of the new music in bars."),
    form("Bars", "int", step=1, cap="max_bars", operations=("generate", "continue")),
]
PrimerBars = Annotated[
    int | None,
    Field(
        ge=1,
        le=MAX_BARS,
        description="Continue: the model keeps this many bars from the start of the piece and carries on from "
        "there; empty: all of it.",
    ),
    form("Bars of the piece to keep", "count", step=1, operations=("continue",)),
]
Temperature = Annotated[
    float,
    Field(gt=0, le=3, description="Lower: safer, more repetitive. Higher: more adventurous."),
    form("Temperature", "float", step=0.05, form_min=0.5, form_max=1.5, operations=("generate", "continue")),
]
TopP = Annotated[
    float | None,
    Field(
        gt=0, le=1, description="Sample only from the most likely tokens holding this share of probability."
    ),
    form(
        "Nucleus (top-p)", "float", step=0.01, form_min=0.5, form_max=1.0, operations=("generate", "continue")
    ),
]
TopK = Annotated[int | None, Field(ge=1, le=1000, description="Sample among the K most likely tokens.")]
BarClasses = Annotated[list[Annotated[int, Field(ge=0, le=MAX_CLASS)] | None], Field(max_length=MAX_BARS)]
Rhythm = Annotated[
    BarClasses | None,
    BeforeValidator(_bar_classes),
    Field(
        description=f"Rhythmic-intensity class per bar (0 calm ... {MAX_CLASS} busy; null or '-': free), "
        "e.g. 2,2,4,6.",
    ),
    form("Shape bar by bar", "bar_plan", step=1, operations=("generate",), control="attributes"),
]
Polyphony = Annotated[
    BarClasses | None,
    BeforeValidator(_bar_classes),
    Field(
        description=f"Polyphony class per bar (0 thin ... {MAX_CLASS} full; null or '-': free), e.g. 3,3,5,5.",
    ),
]
PitchClasses = Annotated[
    Annotated[list[str], Field(max_length=12)] | None,
    BeforeValidator(_pitch_classes),
    Field(description="Pitch classes to favour, e.g. C,E,G (the notes of a chord or scale)."),
    form("Favour pitch classes", "pitch_classes", choices=tuple((p, p) for p in PITCH_CLASSES)),
]
TrackMap = Annotated[
    Annotated[dict[str, Annotated[int, Field(ge=0, le=1024)]], Field(max_length=64)] | None,
    BeforeValidator(_track_map),
    Field(
        description="Accompany: which tracks of your piece to keep, as {model track name: your track index} "
        "(e.g. {'soprano': 0}, or 'soprano:0' on the command line); the model plays the other tracks.",
    ),
    form("Tracks to keep", "track_map", choices="tracks", operations=("accompany",)),
]


def plan_of(rhythm: list[int | None] | None, polyphony: list[int | None] | None) -> list[Any]:
    """Separate per-bar rhythm and polyphony class lists (either may be shorter or absent) as one per-bar plan of
    (rhythm, polyphony) pairs, None where the model chooses both."""
    r, p = list(rhythm or []), list(polyphony or [])
    n = max(len(r), len(p))
    r += [None] * (n - len(r))
    p += [None] * (n - len(p))
    return [None if a is None and b is None else (a, b) for a, b in zip(r, p, strict=True)]
