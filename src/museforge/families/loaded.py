"""A loaded model and the pieces every family's sampler shares.

`LoadedModel` is a checkpoint ready to sample from (`museforge.families.serving.get_model` makes one);
`GeneratedSong` is one sample with the request that made it and its originality. What each family accepts and
how it samples lives in its home under `museforge.families`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import symusic
import torch

from museforge.data.formats import load_score
from museforge.generation.batched import BatchedDecoder
from museforge.generation.precision import (
    PrecisionDecision,
)
from museforge.generation.splice import keep_source_bars, keep_source_seconds
from museforge.metrics.originality import OriginalityIndex, OriginalityResult, check_originality, is_near_copy
from museforge.models.checkpoint import Checkpoint
from museforge.models.zoo import ORIGINALITY_FILE
from museforge.tokenizers.attributes import N_ATTRIBUTE_CLASSES
from museforge.tokenizers.base import TokenTokenizer
from museforge.tokenizers.performance import PerformanceTokenizer
from museforge.tokenizers.pianoroll import PianoRollTokenizer
from museforge.tokenizers.remi import RemiTokenizer

HALF_ALWAYS = 1 << 30  # `LoadedModel.half_up_to` where float16 samples every batch
AttributePlan = Sequence[tuple[int | None, int | None] | None] | Mapping[int, tuple[int | None, int | None]]
ProgressFn = Callable[[float], None]


@dataclass
class LoadedModel:
    """A checkpoint ready to sample from: the model on its device, its tokenizer, and its originality index."""

    name: str
    path: Path
    checkpoint: Checkpoint
    tokenizer: TokenTokenizer | PianoRollTokenizer
    device: torch.device
    originality_index: OriginalityIndex | None
    styles: tuple[str, ...] = ()  # what it can be asked for: a REMI model's styles, a MuseGAN's genres
    half: torch.nn.Module | None = None  # a float16 copy, for batches up to ``half_up_to``
    half_up_to: int = 0
    precision_decision: PrecisionDecision | None = None  # what "auto" measured and chose, None otherwise
    version: int | None = None  # the registry version of a shipped model (None: a folder given by path)
    batcher: BatchedDecoder | None = None  # decodes one-sample requests of many threads together (a worker's)

    def precision_params(self, batch: int) -> dict[str, Any]:
        """A song's record of the model version and precision that made it (under "auto", of the decision)."""
        made: dict[str, Any] = {"precision": self.sampler(batch)[1]}
        if self.version is not None:
            made["version"] = self.version
        if self.precision_decision is not None:
            made["precision_decision"] = str(self.precision_decision)
        return made

    def sampler(self, batch: int) -> tuple[torch.nn.Module, str]:
        """The model that samples ``batch`` sequences at once, and its precision ("fp32" or "fp16"); with a
        batcher, a one-sample request is decoded in its batch, by the batch's model."""
        if batch == 1 and self.batcher is not None:
            return self.batcher.model, self.batcher.precision
        if self.half is not None and batch <= self.half_up_to:
            return self.half, "fp16"
        return self.checkpoint.model, "fp32"

    @property
    def precision(self) -> str:
        """How this model samples: "fp32", "fp16", or "fp16 up to batch N" (fp32 beyond)."""
        if self.half is None:
            return "fp32"
        return "fp16" if self.half_up_to == HALF_ALWAYS else f"fp16 up to batch {self.half_up_to}"

    @property
    def family(self) -> str:
        return self.checkpoint.model_name


@dataclass
class OriginalityCheck:
    """A generated song's originality against the model's training data (see `museforge.metrics.originality`)."""

    result: OriginalityResult
    near_copy: bool
    index_source: str

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "near_copy": self.near_copy, "index_source": self.index_source}


@dataclass
class GeneratedSong:
    """One sample: the score, its tokens (prompt included), the request that made it and how long it took."""

    score: symusic.Score
    tokens: list[int]
    model: str
    params: dict[str, Any]
    seconds: float  # wall time of the whole batch this song was sampled in, decoding included
    new_tokens: int  # tokens sampled for this song (after the prompt)
    originality: OriginalityCheck | None = None

    def kept_tokens(self) -> dict[str, Any] | None:
        """What it takes to score the song again under any version: its tokens and the index of the first one
        sampled (``tokens.json`` beside a stored song); None when it has no prompt and sampled tokens."""
        start = len(self.tokens) - self.new_tokens
        return {"tokens": list(self.tokens), "start": start} if 0 < start < len(self.tokens) else None

    def save_midi(self, path: str | Path) -> Path:
        """Write the song as a MIDI file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.score.dump_midi(str(path))
        return path


# ---- argument checks ------------------------------------------------------------------------------------------


def attribute_list(attributes: AttributePlan | None, bars: int) -> list[tuple[int | None, int | None] | None]:
    """A per-bar plan as a list of ``bars`` entries; bar indices count from the first generated bar."""
    if attributes is None:
        return []
    if isinstance(attributes, Mapping):
        bad = [b for b in attributes if not 0 <= int(b) < bars]
        if bad:
            raise ValueError(f"attribute plan names bars {bad} outside 0..{bars - 1}")
        plan: list[tuple[int | None, int | None] | None] = [None] * bars
        for b, entry in attributes.items():
            plan[int(b)] = entry
    else:
        plan = list(attributes)
        if len(plan) > bars:
            raise ValueError(f"attribute plan covers {len(plan)} bars but only {bars} are generated")
    out: list[tuple[int | None, int | None] | None] = []
    for b, entry in enumerate(plan):
        if entry is None:
            out.append(None)
            continue
        if len(entry) != 2:
            raise ValueError(f"bar {b}: an attribute entry is (rhythm class, polyphony class), got {entry!r}")
        for label, k in zip(("rhythm", "polyphony"), entry, strict=True):
            if k is not None and not 0 <= int(k) < N_ATTRIBUTE_CLASSES:
                raise ValueError(f"bar {b}: {label} class must be in 0..{N_ATTRIBUTE_CLASSES - 1}, got {k}")
        out.append((None if entry[0] is None else int(entry[0]), None if entry[1] is None else int(entry[1])))
    return out


def read_piece(primer: str | Path | symusic.Score, what: str = "primer") -> symusic.Score:
    """A score, or the score of a music file (a clear error naming the file when it cannot be read)."""
    if isinstance(primer, symusic.Score):
        return primer
    path = Path(primer)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        return load_score(path)
    except Exception as exc:  # every reader has its own errors; the caller needs to know which file failed
        raise ValueError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}") from exc


# ---- helpers the families' samplers share -----------------------------------------------------------------


def with_primer(
    loaded: LoadedModel, primer: symusic.Score, made: symusic.Score, prompt: Sequence[int], primer_bars: int
) -> symusic.Score:
    """A continuation with the primer's own tracks where it keeps the primer: its first ``primer_bars`` bars
    (REMI), or everything up to where the prompt's events end (Performance RNN)."""
    label = f"{loaded.name} continuation"
    tok = loaded.tokenizer
    if isinstance(tok, PerformanceTokenizer):
        shifts = [
            t - tok.time_shift_offset + 1 for t in prompt if tok.time_shift_offset <= t < tok.velocity_offset
        ]
        return keep_source_seconds(primer, made, sum(shifts) / tok.config.steps_per_second, label)
    voices = tok.voice_tracks(primer) if isinstance(tok, RemiTokenizer) else None
    return keep_source_bars(primer, made, range(primer_bars), label, voices)


def originality_of(
    loaded: LoadedModel, index: OriginalityIndex | str | Path | None
) -> tuple[OriginalityIndex | None, str]:
    """The index songs are checked against, and where it came from: ``index``, else the model's own."""
    if index is None:
        found = loaded.originality_index
        return found, "" if found is None else str(loaded.path / ORIGINALITY_FILE)
    if isinstance(index, OriginalityIndex):
        return index, index.source
    return OriginalityIndex.load(index), str(index)


def judge_originality(
    score: symusic.Score, index: OriginalityIndex | None, source: str
) -> OriginalityCheck | None:
    """The originality of what a model made (None without an index)."""
    if index is None:
        return None
    result = check_originality(score, index)
    return OriginalityCheck(result, is_near_copy(result), source)


__all__ = [
    "GeneratedSong",
    "LoadedModel",
    "OriginalityCheck",
    "attribute_list",
    "judge_originality",
    "originality_of",
    "read_piece",
    "with_primer",
]
