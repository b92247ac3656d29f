"""The interface every museforge representation shares, so datasets, models and the CLI can treat them alike.

A tokenizer has a ``name`` (its key in `museforge.tokenizers.TOKENIZERS`), a dataclass config that survives a
JSON round trip, ``encode(score)`` and ``decode(...) -> symusic.Score``, and ``save(path)`` writing one JSON file
that `museforge.tokenizers.load_tokenizer` reads back into an identical tokenizer.
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import symusic

from museforge.io import atomic_write_json


def _jsonable(value: Any) -> Any:
    """Tuples become lists and nested dataclasses dicts, so the config is plain JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def as_tuple(value: Any) -> Any:
    """Lists (as JSON gives them back) become tuples, recursively, so a loaded config equals the saved one."""
    if isinstance(value, list | tuple):
        return tuple(as_tuple(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
    """Base of the tokenizer configs: JSON-friendly fields, validated and normalized in ``__post_init__``."""

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Self:
        """Build a config from ``to_dict`` output (or a partial dict of overrides); unknown keys are errors."""
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} fields: {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(**data)


class Tokenizer(ABC):
    """A representation of a `symusic.Score` as arrays a model can learn from, and back."""

    name: ClassVar[str]
    config_class: ClassVar[type[TokenizerConfig]]

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise ValueError(
                f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}"
            )
        self.config = config

    @abstractmethod
    def encode(self, score: symusic.Score) -> Any:
        """Turn a score into this representation."""

    @abstractmethod
    def decode(self, data: Any) -> symusic.Score:
        """Turn this representation back into a score."""

    def state_dict(self) -> dict[str, Any]:
        """What ``save`` writes: the name and config, plus any learned state subclasses add."""
        return {"name": self.name, "config": self.config.to_dict()}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Self:
        """Rebuild a tokenizer from ``state_dict`` output."""
        if state.get("name") != cls.name:
            raise ValueError(f"state is for tokenizer {state.get('name')!r}, not {cls.name!r}")
        return cls(cls.config_class.from_dict(state.get("config")))

    def save(self, path: str | Path) -> None:
        """Write the tokenizer as one JSON file (atomically)."""
        atomic_write_json(Path(path), self.state_dict())

    @classmethod
    def load(cls, path: str | Path) -> Self:
        return cls.from_state_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class TokenTokenizer(Tokenizer):
    """A tokenizer whose output is a sequence of integer ids from a fixed vocabulary."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Number of distinct ids (the embedding table size a model needs)."""

    def token_names(self) -> list[str] | None:
        """Each id's token name, in id order, where the tokenizer can tell (None otherwise): two vocabularies
        are compared by name when a model moves from one to the other (`museforge.training.recipes`)."""
        return None


def one_voice_per_pitch(
    onsets: np.ndarray, offsets: np.ndarray, keys: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Make notes of one key (pitch, or (track, pitch) folded into one int) never overlap, as MIDI requires.

    Of notes with the same key and onset only the longest is kept; a note is cut at the next onset of its key.
    Returns the indices of the kept notes, sorted by (key, onset), and their new offsets.
    """
    order = np.lexsort((-offsets, onsets, keys))
    on, off, key = onsets[order], offsets[order], keys[order]
    keep = np.append(True, (key[1:] != key[:-1]) | (on[1:] != on[:-1]))
    order, on, off, key = order[keep], on[keep], off[keep], key[keep]
    same_next = np.append(key[1:] == key[:-1], False)
    next_on = np.append(on[1:], 0)
    return order, np.where(same_next, np.minimum(off, next_on), off)
