"""Representations of scores for the model families: REMI tokens, performance events and piano rolls.

``build_tokenizer("remi", {...})`` makes one from a name and a config dict; ``load_tokenizer(path)`` reads one
saved with ``save(path)`` (the JSON names the tokenizer, so callers need not know which it is).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from museforge.tokenizers.base import Tokenizer, TokenizerConfig, TokenTokenizer
from museforge.tokenizers.performance import PerformanceConfig, PerformanceTokenizer
from museforge.tokenizers.pianoroll import LPD5_TRACKS, PianoRollConfig, PianoRollTokenizer, TrackSpec
from museforge.tokenizers.remi import RemiConfig, RemiEncoding, RemiTokenizer

TOKENIZERS: dict[str, type[Tokenizer]] = {
    RemiTokenizer.name: RemiTokenizer,
    PerformanceTokenizer.name: PerformanceTokenizer,
    PianoRollTokenizer.name: PianoRollTokenizer,
}


def _tokenizer_class(name: str) -> type[Tokenizer]:
    if name not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer {name!r}; known: {', '.join(sorted(TOKENIZERS))}")
    return TOKENIZERS[name]


def build_tokenizer(name: str, config: dict[str, Any] | None = None) -> Tokenizer:
    """A tokenizer by registry name, with config fields overriding the defaults."""
    cls = _tokenizer_class(name)
    return cls(cls.config_class.from_dict(config))


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Read a tokenizer written by ``save``, whatever its kind."""
    state = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(state, dict) or "name" not in state:
        raise ValueError(f"{path} is not a saved museforge tokenizer (no 'name')")
    return _tokenizer_class(state["name"]).from_state_dict(state)


__all__ = [
    "LPD5_TRACKS",
    "TOKENIZERS",
    "PerformanceConfig",
    "PerformanceTokenizer",
    "PianoRollConfig",
    "PianoRollTokenizer",
    "RemiConfig",
    "RemiEncoding",
    "RemiTokenizer",
    "TokenTokenizer",
    "Tokenizer",
    "TokenizerConfig",
    "TrackSpec",
    "build_tokenizer",
    "load_tokenizer",
]
