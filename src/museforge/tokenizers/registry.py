"""The registry of tokenizers by name: build one from a name and a config, or read a saved one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from museforge.tokenizers.base import Tokenizer
from museforge.tokenizers.performance import PerformanceTokenizer
from museforge.tokenizers.pianoroll import PianoRollTokenizer
from museforge.tokenizers.remi import RemiTokenizer

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
    return load_tokenizer_state(state)


def load_tokenizer_state(state: dict[str, Any]) -> Tokenizer:
    """A tokenizer from its ``state_dict()`` (as a checkpoint keeps it), whatever its kind."""
    return _tokenizer_class(state["name"]).from_state_dict(state)
