"""Loaded models and the pieces every family's sampler shares.

`get_model` loads a checkpoint once (cached, so a server pays the load once), with float16 weights where they
agree with float32 and are faster on this machine; `GeneratedSong` is one sample with the request that made it
and its originality. What each family accepts and how it samples lives in its home under `museforge.families`.
Devices and precision are chosen by the caller.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import symusic
import torch
from torch import Tensor

from museforge.data.formats import load_score
from museforge.generation.precision import (
    PrecisionDecision,
    cached_decision,
    measure_precision,
    save_decision,
    unfaithful,
)
from museforge.generation.splice import keep_source_bars, keep_source_seconds
from museforge.metrics.originality import OriginalityIndex, OriginalityResult, check_originality, is_near_copy
from museforge.models.checkpoint import WEIGHTS_FILE, Checkpoint, load_checkpoint
from museforge.models.musegan import MuseGAN
from museforge.models.musemorphose import MuseMorphose
from museforge.models.transformer import TransformerLM
from museforge.models.zoo import ORIGINALITY_FILE, locate_model
from museforge.tokenizers import TOKENIZERS
from museforge.tokenizers.attributes import N_ATTRIBUTE_CLASSES
from museforge.tokenizers.base import TokenTokenizer
from museforge.tokenizers.performance import PerformanceTokenizer
from museforge.tokenizers.pianoroll import PianoRollTokenizer
from museforge.tokenizers.remi import RemiTokenizer

PRECISIONS = ("fp32", "fp16", "auto")
HALF_PROBE_TOKENS = 256  # length of the probe on which a float16 Transformer must agree with float32
HALF_MAX_KL = 1e-3  # mean KL(fp32 || fp16) per next-token distribution, nats; the shipped model gives ~5e-6
# With "auto", batches up to this size sample in float16 where a probe on this machine finds float16 faster
# (`museforge.generation.precision`): at batch 1 reading the weights can be the bottleneck and float16 halves
# it (1.8x the tokens/s on a 2-core EPYC; no faster on an Intel Xeon); by batch 4 the products are
# compute-bound, and CPUs without float16 arithmetic convert every element, so float32 catches up (and is 1.25x
# faster at batch 8).
HALF_AUTO_MAX_BATCH = 4
HALF_ALWAYS = 1 << 30

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
    half: TransformerLM | MuseMorphose | None = None  # a float16 copy, for batches up to ``half_up_to``
    half_up_to: int = 0
    precision_decision: PrecisionDecision | None = None  # what "auto" measured and chose, None otherwise
    version: int | None = None  # the registry version of a shipped model (None: a folder given by path)

    def precision_params(self, batch: int) -> dict[str, Any]:
        """A song's record of the model version and precision that made it (under "auto", of the decision)."""
        made: dict[str, Any] = {"precision": self.sampler(batch)[1]}
        if self.version is not None:
            made["version"] = self.version
        if self.precision_decision is not None:
            made["precision_decision"] = str(self.precision_decision)
        return made

    def sampler(self, batch: int) -> tuple[torch.nn.Module, str]:
        """The model that samples ``batch`` sequences at once, and its precision ("fp32" or "fp16")."""
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

    @property
    def styles(self) -> tuple[str, ...]:
        """Styles a REMI model (or genres a MuseGAN) can be asked for (empty for families without them)."""
        if isinstance(self.checkpoint.model, MuseGAN):
            return self.checkpoint.model.config.genres
        return self.tokenizer.config.styles if isinstance(self.tokenizer, RemiTokenizer) else ()


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

    def save_midi(self, path: str | Path) -> Path:
        """Write the song as a MIDI file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.score.dump_midi(str(path))
        return path


# ---- the model cache ------------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, str, str, float], LoadedModel] = {}
_CACHE_LOCK = threading.Lock()


def _tokenizer_from_state(state: dict[str, Any], path: Path) -> TokenTokenizer | PianoRollTokenizer:
    name = state.get("name")
    if name not in TOKENIZERS:
        raise ValueError(f"checkpoint {path} has no usable tokenizer (tokenizer.json names {name!r})")
    tokenizer = TOKENIZERS[name].from_state_dict(state)
    if not isinstance(tokenizer, TokenTokenizer | PianoRollTokenizer):
        raise ValueError(f"checkpoint {path}: tokenizer {name!r} makes neither token ids nor piano rolls")
    return tokenizer


def get_model(
    name_or_path: str | Path,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    cache_dir: Path | None = None,
) -> LoadedModel:
    """The model of a shipped name or checkpoint directory on ``device``, loaded once and reused.

    ``precision="fp16"`` samples a REMI Transformer or a MuseMorphose with its weights in float16: at batch 1
    each token reads every weight once, so halving their bytes gives about 1.8x the tokens/s on a CPU (attention
    stays float32). ``"auto"`` does that for batches up to `HALF_AUTO_MAX_BATCH`, and only when the float16
    model's next-token distributions agree with float32's on a probe (`half_precision_kl`) and it samples faster
    on this machine (`museforge.generation.precision`; measured once per machine, torch and weights, and kept in
    ``cache_dir``, default ``$MUSEFORGE_VAR_DIR`` or ``var/``); other families stay float32.
    ``LoadedModel.precision`` says what was chosen, and each song's params which precision made it. A checkpoint
    rewritten on disk (new weights) is loaded again, so a long-running server picks it up.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    path, name, version = locate_model(name_or_path)
    path = path.resolve()
    dev = torch.device(device)
    key = (str(path), str(dev), precision, (path / "model.safetensors").stat().st_mtime)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        ckpt = load_checkpoint(path, device=dev)
        half, decision = None, None
        if precision == "fp16":
            half = _half_precision(ckpt)
        elif precision == "auto":
            half, decision = _auto_precision(ckpt, path / WEIGHTS_FILE, cache_dir)
        tokenizer = _tokenizer_from_state(ckpt.tokenizer, path)
        index_file = path / ORIGINALITY_FILE
        index = OriginalityIndex.load(index_file) if index_file.is_file() else None
        up_to = HALF_AUTO_MAX_BATCH if precision == "auto" else HALF_ALWAYS
        loaded = LoadedModel(
            name, path, ckpt, tokenizer, dev, index, half, up_to if half is not None else 0, decision, version
        )
        for old in [k for k in _CACHE if k[:3] == key[:3]]:  # an older version of the same weights
            del _CACHE[old]
        _CACHE[key] = loaded
        return loaded


def _probe_logits(model: TransformerLM | MuseMorphose, probe: Tensor, gen: torch.Generator) -> Tensor:
    """Next-token logits [1, T, V] of ``probe`` [1, T]; a MuseMorphose decodes it as one bar whose condition
    comes from a random latent (drawn from ``gen``) and random classes, so its condition path is probed too."""
    if isinstance(model, TransformerLM):
        return model(probe)[0]
    c = model.config
    z = torch.randn(1, 1, c.d_latent, generator=gen).to(probe.device)
    rhythm, poly = torch.randint(c.n_attr_classes, (2, 1, 1), generator=gen).to(probe.device)
    cond = model.conditions(z, rhythm, poly)  # [1, 1, D], in the model's dtype
    return model.decode(probe, cond.expand(1, probe.shape[1], -1))[0]


def half_precision_kl(
    model: TransformerLM | MuseMorphose, half: TransformerLM | MuseMorphose, tokens: int = HALF_PROBE_TOKENS
) -> float:
    """Mean KL(p_fp32 || p_fp16) in nats over the next-token distributions of a fixed random probe sequence
    (inf when float16 overflows). Random tokens drive the activations harder than music does, so a model that
    passes on them is safe on real prompts."""
    n = min(tokens, model.config.max_seq_len)
    device = next(model.parameters()).device
    probe = torch.randint(model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = _probe_logits(model, probe.to(device), torch.Generator().manual_seed(1)).float().log_softmax(-1)
        low = _probe_logits(half, probe.to(device), torch.Generator().manual_seed(1)).float().log_softmax(-1)
    if not torch.isfinite(low).all():
        return math.inf
    return float((ref.exp() * (ref - low)).sum(-1).mean())


def _half_precision(ckpt: Checkpoint) -> TransformerLM | MuseMorphose:
    """A float16 copy of a Transformer's or MuseMorphose's model; an error for the families that sample in
    float32 only."""
    model = ckpt.model
    if not isinstance(model, TransformerLM | MuseMorphose):
        raise ValueError(
            f"precision fp16 is for REMI Transformers and MuseMorphose; {ckpt.model_name} samples in fp32"
        )
    return copy.deepcopy(model).half().eval()


def _auto_precision(
    ckpt: Checkpoint, weights: Path, cache_dir: Path | None
) -> tuple[TransformerLM | MuseMorphose | None, PrecisionDecision | None]:
    """The float16 copy "auto" samples with (None: float32), and the decision: this machine's recorded one, else
    the KL check and the speed probe, recorded for the next load."""
    if not isinstance(ckpt.model, TransformerLM | MuseMorphose):
        return None, None
    device = next(ckpt.model.parameters()).device
    decision = cached_decision(weights, device, cache_dir)
    if decision is not None:
        return (_half_precision(ckpt) if decision.precision == "fp16" else None), decision
    model, half = ckpt.model, _half_precision(ckpt)
    assert isinstance(model, TransformerLM | MuseMorphose)
    kl = half_precision_kl(model, half)
    if kl < HALF_MAX_KL:
        decision = measure_precision(model, half, weights)
    else:
        decision = unfaithful(f"fp16 disagrees with fp32 (KL {kl:.3g} nats per token)", weights, device)
    # a read-only var folder: the decision holds, and the next load measures again
    with contextlib.suppress(OSError):
        save_decision(decision, cache_dir)
    return (half if decision.precision == "fp16" else None), decision


def clear_model_cache() -> None:
    """Forget every loaded model (tests, or a server freeing memory)."""
    with _CACHE_LOCK:
        _CACHE.clear()


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
    return keep_source_bars(primer, made, range(primer_bars), label)


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
    "clear_model_cache",
    "get_model",
    "half_precision_kl",
    "judge_originality",
    "originality_of",
    "read_piece",
    "with_primer",
]
