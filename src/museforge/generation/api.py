"""Generate songs from a trained model: the one library entry point the command line and the web app share.

``generate_song(model, ...)`` turns a request (style, length, sampling knobs, seed, primer, controls) into decoded
scores. It knows each family's conditioning:

* REMI Transformer: the prompt is ``[Style_x]`` (or a primer's REMI tokens), the length is counted in bars by
  the REMI grammar mask, and a per-bar plan of rhythm/polyphony classes is forced through the same mask;
* Performance RNN: the length is counted in seconds of TIME_SHIFT events (the shift that crosses the end is cut
  to end there), and Magenta's density / pitch-class controls are fed to every step;
* MuseMorphose: bars from the prior with the per-bar plan as the decoder's attribute classes, led by the style;
  a primer is encoded and continued (`museforge.generation.musemorphose`); ``restyle_song(model, piece, ...)``
  re-plays a piece's bars with shifted or new attribute classes.

Loaded models are cached (`get_model`), so a server pays the load once. Devices and precision are chosen by the
caller.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch
from torch import Tensor

from museforge.data.formats import load_score
from museforge.defaults import DEFAULT_GUIDANCE
from museforge.generation.decode import Generated, generate_performance, generate_transformer
from museforge.generation.musegan import (
    accompaniment_score,
    accompany,
    generate_piece,
    given_rolls,
    morph_piece,
    parse_track_map,
)
from museforge.generation.musemorphose import continue_piece, decoded_rows, scaled_progress
from museforge.generation.musemorphose import generate as morph_generate
from museforge.generation.musemorphose import transfer as morph_transfer
from museforge.generation.precision import (
    PrecisionDecision,
    cached_decision,
    measure_precision,
    save_decision,
    unfaithful,
)
from museforge.generation.remi_grammar import RemiGrammar, stop_at_eos
from museforge.generation.splice import keep_source_bars, keep_source_seconds
from museforge.metrics.originality import OriginalityIndex, OriginalityResult, check_originality, is_near_copy
from museforge.models.checkpoint import WEIGHTS_FILE, Checkpoint, load_checkpoint
from museforge.models.musegan import MuseGAN
from museforge.models.musemorphose import MuseMorphose
from museforge.models.performance_rnn import N_DENSITY_CLASSES, PerformanceRNN, encode_controls
from museforge.models.transformer import TransformerLM
from museforge.models.zoo import ORIGINALITY_FILE, resolve_model
from museforge.tokenizers import TOKENIZERS
from museforge.tokenizers.attributes import N_ATTRIBUTE_CLASSES
from museforge.tokenizers.base import TokenTokenizer
from museforge.tokenizers.performance import PerformanceTokenizer
from museforge.tokenizers.pianoroll import PianoRollTokenizer
from museforge.tokenizers.remi import RemiTokenizer

DEFAULT_BARS = 16
DEFAULT_SECONDS = 30.0
MAX_BAR_TOKENS = 384  # REMI tokens one bar may hold before it must end (dense piano bars stay well below)
MAX_EVENTS_PER_SECOND = 400  # Performance-RNN token budget per requested second (very dense music ~150)
MAX_EVENTS_PER_STEP = 32  # events at one instant before time must move on (a chord change of 8 voices is ~17)

PRECISIONS = ("fp32", "fp16", "auto")
HALF_PROBE_TOKENS = 256  # length of the probe on which a float16 Transformer must agree with float32
HALF_MAX_KL = 1e-3  # mean KL(fp32 || fp16) per next-token distribution, nats; the shipped model gives ~5e-6
# With "auto", batches up to this size sample in float16 where a probe on this machine finds float16 faster
# (`museforge.generation.precision`): at batch 1 reading the weights can be the bottleneck and float16 halves
# it (1.8x the tokens/s on a 2-core EPYC; no faster on an Intel Xeon); by batch 4 the products are
# compute-bound, and CPUs without float16 arithmetic convert every element, so float32 catches up (and is 1.25x
# faster at batch 8).
HALF_AUTO_MAX_BATCH = 4
HALF_FAMILIES = ("transformer", "musemorphose")  # the families that can sample with float16 weights
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

    def precision_params(self, batch: int) -> dict[str, str]:
        """A song's record of its precision, and under "auto" of the decision and its measurements."""
        made = {"precision": self.sampler(batch)[1]}
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
    path = resolve_model(name_or_path).resolve()
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
        name = str(name_or_path) if not Path(name_or_path).is_dir() else path.name
        up_to = HALF_AUTO_MAX_BATCH if precision == "auto" else HALF_ALWAYS
        loaded = LoadedModel(
            name, path, ckpt, tokenizer, dev, index, half, up_to if half is not None else 0, decision
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
    if ckpt.model_name not in HALF_FAMILIES:
        raise ValueError(
            f"precision fp16 is for REMI Transformers and MuseMorphose; {ckpt.model_name} samples in fp32"
        )
    assert isinstance(model, TransformerLM | MuseMorphose)
    return copy.deepcopy(model).half().eval()


def _auto_precision(
    ckpt: Checkpoint, weights: Path, cache_dir: Path | None
) -> tuple[TransformerLM | MuseMorphose | None, PrecisionDecision | None]:
    """The float16 copy "auto" samples with (None: float32), and the decision: this machine's recorded one, else
    the KL check and the speed probe, recorded for the next load."""
    if ckpt.model_name not in HALF_FAMILIES:
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


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None, num_samples: int) -> None:
    if not temperature > 0 or not math.isfinite(temperature):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")


def _attribute_list(
    attributes: AttributePlan | None, bars: int
) -> list[tuple[int | None, int | None] | None]:
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


def attribute_plan(
    rhythm: Sequence[int | None] | None, polyphony: Sequence[int | None] | None
) -> list[tuple[int | None, int | None] | None]:
    """Zip separate per-bar rhythm and polyphony class lists (either may be shorter or absent) into a plan."""
    r, p = list(rhythm or []), list(polyphony or [])
    n = max(len(r), len(p))
    r += [None] * (n - len(r))
    p += [None] * (n - len(p))
    return [None if a is None and b is None else (a, b) for a, b in zip(r, p, strict=True)]


def _read_primer(primer: str | Path | symusic.Score, what: str = "primer") -> symusic.Score:
    if isinstance(primer, symusic.Score):
        return primer
    path = Path(primer)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        return load_score(path)
    except Exception as exc:  # every reader has its own errors; the caller needs to know which file failed
        raise ValueError(f"cannot read {what} {path}: {type(exc).__name__}: {exc}") from exc


# ---- REMI ------------------------------------------------------------------------------------------------------


def _remi_prompt(
    tok: RemiTokenizer, style: str | None, primer: symusic.Score | None, primer_bars: int | None
) -> tuple[list[int], int]:
    """Prompt ids and how many of its bars come from the primer.

    A primer prompt ends with a fresh Bar token, so the continuation starts a new bar and the primer's own
    bars stay exactly as they were.
    """
    head = [] if style is None else [tok.style_token(style)]
    if primer is None:
        return head or [tok.bar_id], 0
    enc = tok.encode(primer, style=style)
    ids, starts = enc.ids.tolist(), enc.bar_starts.tolist()
    if not starts:
        raise ValueError("the primer holds no notes to continue")
    if primer_bars is not None and primer_bars < len(starts):
        ids = ids[: starts[primer_bars]]
        starts = starts[:primer_bars]
    return [*ids, tok.bar_id], len(starts)


def _generate_remi(
    loaded: LoadedModel,
    gen: torch.Generator,
    *,
    style: str | None,
    bars: int,
    primer: symusic.Score | None,
    primer_bars: int | None,
    plan: list[tuple[int | None, int | None] | None],
    sampling: dict[str, Any],
    num_samples: int,
    progress: ProgressFn | None,
) -> tuple[Generated, int, int]:
    """Sampled REMI tokens, the prompt length and the primer's bar count.

    The last bar ends where the model ends it, by EOS or by starting another bar (that Bar becomes the EOS,
    `RemiGrammar`'s ``end_with_bar``). Forbidding the Bar there instead hands its probability to the tokens
    still allowed, and a model that wants a new bar then piles notes into the last one (repeated pitches, long
    sustains) until EOS wins: every 8-bar sample of the shipped model did, and lasted 1.5x as long as asked.
    """
    tok = loaded.tokenizer
    assert isinstance(tok, RemiTokenizer) and isinstance(loaded.checkpoint.model, TransformerLM)
    prompt, primer_n = _remi_prompt(tok, style, primer, primer_bars)
    total_bars = primer_n + bars
    budget = bars * (MAX_BAR_TOKENS + 8) + 8
    grammar = RemiGrammar(
        tok,
        max_bars=total_bars,
        bar_attributes=[None] * primer_n + plan,
        max_bar_tokens=MAX_BAR_TOKENS,
        end_with_bar=True,
        max_new_tokens=budget,
    )
    eos = stop_at_eos(tok.eos_id)
    bars_before = sum(t == tok.bar_id for t in prompt)

    def stop(seqs: Tensor) -> Tensor:
        counted = (seqs == tok.bar_id).sum(1)  # [B] Bar tokens, the prompt's included, as the grammar counts
        if progress is not None:
            written = counted.float().mean().item() - bars_before
            progress(min(1.0, max(0.0, written / (bars + 1))))
        return eos(seqs) | (counted > total_bars)

    out = generate_transformer(
        loaded.sampler(num_samples)[0],
        prompt,
        budget,
        num_samples=num_samples,
        generator=gen,
        mask_fn=grammar,
        stop_fn=stop,
        pad_id=tok.pad_id,
        **sampling,
    )
    rows = torch.arange(out.tokens.shape[0])
    ends = out.lengths - 1  # [B] the last token of each row
    closed = out.tokens[rows, ends] == tok.bar_id  # rows the model ended by starting another bar
    out.tokens[rows[closed], ends[closed]] = tok.eos_id
    return out, len(prompt), primer_n


# ---- Performance RNN ------------------------------------------------------------------------------------------


class PerformanceLength:
    """Length in seconds for `generate_performance`, and no wasted events.

    ``mask`` allows a NOTE_OFF only for a sounding pitch (the decoder ignores the others, so they only eat the
    token budget) and, after ``MAX_EVENTS_PER_STEP`` events at one instant, only lets time move on; ``stop``
    ends a row once its time is used up, and `cut` shortens the TIME_SHIFT that ran past the end to end exactly
    there, so every sample lasts exactly ``steps`` time steps after the prompt unless the token budget runs out
    first. Shifts longer than the time left are not masked: the model's wish to let time pass is then the end,
    where masking them made it play notes instead (up to 3x the notes per second in the last second).
    """

    def __init__(self, tok: PerformanceTokenizer, prompt_len: int, steps: int) -> None:
        self.tok, self.prompt_len, self.steps = tok, prompt_len, steps
        ids = torch.arange(tok.vocab_size)
        self.is_shift = (ids >= tok.time_shift_offset) & (ids < tok.velocity_offset)  # [V]
        self.is_off = (ids >= tok.note_off_offset) & (ids < tok.time_shift_offset)  # [V]
        self.shift_steps = torch.where(self.is_shift, ids - tok.time_shift_offset + 1, 0)  # [V]
        self._seen = -1
        self._sounding = torch.zeros(0, 128, dtype=torch.bool)  # [B, 128]
        self._run = torch.zeros(0, dtype=torch.long)  # [B] events since the last TIME_SHIFT

    def elapsed(self, seqs: Tensor) -> Tensor:
        """Time steps [B] sampled after the prompt."""
        return self.shift_steps.to(seqs.device)[seqs[:, self.prompt_len :]].sum(1)

    def _sync(self, seqs: Tensor) -> None:
        b, t = seqs.shape
        if self._seen + 1 != t or self._sounding.shape[0] != b:
            self._sounding = torch.zeros(b, 128, dtype=torch.bool)
            self._run = torch.zeros(b, dtype=torch.long)
            self._seen = 0
        rows = torch.arange(b)
        for token in seqs[:, self._seen :].cpu().T:  # [B] per new position
            on = token < self.tok.note_off_offset
            off = self.is_off[token]
            self._sounding[rows[on], token[on]] = True
            self._sounding[rows[off], token[off] - self.tok.note_off_offset] = False
            self._run = torch.where(self.is_shift[token], 0, self._run + 1)
        self._seen = t

    def mask(self, seqs: Tensor) -> Tensor:
        self._sync(seqs)
        off_ok = torch.zeros(seqs.shape[0], self.tok.vocab_size, dtype=torch.bool)  # [B, V]
        off_ok[:, self.tok.note_off_offset : self.tok.time_shift_offset] = self._sounding
        crowded = (self._run >= MAX_EVENTS_PER_STEP).unsqueeze(1)  # [B, 1]
        allowed = (~self.is_off | off_ok) & (~crowded | self.is_shift)  # [B, V]
        return allowed.to(seqs.device)

    def stop(self, seqs: Tensor) -> Tensor:
        return self.elapsed(seqs) >= self.steps

    def cut(self, out: Generated) -> None:
        """Shorten, in place, each row's last TIME_SHIFT that ran past ``steps`` to end exactly there."""
        for row, n in enumerate(out.lengths.tolist()):
            over = int(self.elapsed(out.tokens[row : row + 1, :n])[0]) - self.steps
            if over > 0:  # the row ended with the shift that crossed the end (`stop` fired right after it)
                last = int(out.tokens[row, n - 1])
                assert self.is_shift[last], "a row past its time must end with a TIME_SHIFT"
                out.tokens[row, n - 1] = last - over


def close_open_notes(ids: list[int], tok: PerformanceTokenizer) -> list[int]:
    """Append NOTE_OFFs for the notes still sounding at the end (younger than the decoder's note cap), so a
    sample ends where its time ends instead of ringing on for ``max_note_seconds``."""
    max_steps = round(tok.config.max_note_seconds * tok.config.steps_per_second)
    now, started = 0, {}
    for t in ids:
        if t < tok.note_off_offset:
            started[t] = now
        elif t < tok.time_shift_offset:
            started.pop(t - tok.note_off_offset, None)
        elif t < tok.velocity_offset:
            now += t - tok.time_shift_offset + 1
    return ids + [tok.note_off_offset + p for p, s in sorted(started.items()) if now - s < max_steps]


def _generate_performance(
    loaded: LoadedModel,
    gen: torch.Generator,
    *,
    seconds: float,
    primer: symusic.Score | None,
    density: int | None,
    pitch_histogram: Sequence[float] | None,
    sampling: dict[str, Any],
    num_samples: int,
    progress: ProgressFn | None,
) -> tuple[Generated, int]:
    tok = loaded.tokenizer
    assert isinstance(tok, PerformanceTokenizer) and isinstance(loaded.checkpoint.model, PerformanceRNN)
    if primer is not None:
        prompt = tok.encode(primer).tolist()
        if not prompt:
            raise ValueError("the primer holds no pitched notes to continue")
    else:
        prompt = [tok.velocity_offset + tok.velocity_bin(80)]  # a neutral start: set a mezzo-forte velocity
    steps = max(1, round(seconds * tok.config.steps_per_second))
    length = PerformanceLength(tok, len(prompt), steps)

    def stop(seqs: Tensor) -> Tensor:
        if progress is not None:
            progress(min(1.0, length.elapsed(seqs).float().mean().item() / steps))
        return length.stop(seqs)

    model = loaded.checkpoint.model
    controls = encode_controls(density, pitch_histogram) if model.config.use_controls else None
    out = generate_performance(
        model,
        prompt,
        max(64, math.ceil(seconds * MAX_EVENTS_PER_SECOND)),
        controls=controls,
        num_samples=num_samples,
        generator=gen,
        mask_fn=length.mask,
        stop_fn=stop,
        pad_id=0,
        **sampling,
    )
    length.cut(out)
    return out, len(prompt)


# ---- MuseGAN ------------------------------------------------------------------------------------------------


def _generate_musegan(
    loaded: LoadedModel,
    *,
    genre: str | None,
    bars: int | None,
    seed: int,
    num_samples: int,
    accompany_with: str | Path | symusic.Score | None,
    tracks: str | Mapping[str, int] | None,
    binarize: str,
    morph: int | None,
    index: OriginalityIndex | None,
    index_source: str,
    progress: ProgressFn | None,
) -> list[GeneratedSong]:
    """Chained phrases of a genre, a morph between two phrases, or an accompaniment of the user's tracks (see
    `museforge.generation.musegan`)."""
    model, tok = loaded.checkpoint.model, loaded.tokenizer
    assert isinstance(model, MuseGAN) and isinstance(tok, PianoRollTokenizer)
    if binarize not in ("threshold", "bernoulli"):
        raise ValueError(f"binarize must be 'threshold' or 'bernoulli', got {binarize!r}")
    if bars is not None and bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    if (accompany_with is None) != (tracks is None):
        raise ValueError("accompaniment needs both the music and its tracks, e.g. tracks='piano:0'")
    if morph is not None:
        if morph < 2:
            raise ValueError(f"morph needs >= 2 phrases (the two ends), got {morph}")
        if bars is not None or accompany_with is not None:
            raise ValueError(
                f"morph sets the length ({morph} phrases of {model.config.n_bars} bars): give no bars and "
                "no accompaniment with it"
            )
    if genre is not None:
        genre_id: int | None = model.config.genre_index(genre)
    elif model.config.n_genres > 1:
        raise ValueError(f"model {loaded.name} needs a genre: {', '.join(model.config.genres)}")
    else:
        genre_id = 0 if model.config.n_genres else None
    names = [t.name for t in tok.config.tracks]
    gen = torch.Generator(device=loaded.device).manual_seed(seed)
    start = time.perf_counter()
    scores, given_map, fits = [], None, []
    user = None
    if accompany_with is not None:
        user = _read_primer(accompany_with)
        given_map = parse_track_map(tracks, names)
        rolls = given_rolls(user, tok, given_map, max_bars=bars)
    for i in range(num_samples):
        if user is not None and given_map is not None:
            result = accompany(model, rolls, genre_id, mode=binarize, generator=gen)
            tempo = float(user.tempos[0].qpm) if len(user.tempos) else 120.0
            scores.append(accompaniment_score(result.roll, user, tok, given_map, tempo=tempo))
            fits.append(result.fit_f1)
        elif morph is not None:
            scores.append(tok.decode(morph_piece(model, morph, genre_id, binarize, gen)))
        else:
            roll = generate_piece(model, bars or DEFAULT_BARS, genre_id, binarize, gen)
            scores.append(tok.decode(roll))
        if progress is not None:
            progress((i + 1) / num_samples)
    elapsed = time.perf_counter() - start
    params: dict[str, Any] = {
        "model": loaded.name,
        "family": "musegan",
        "style": genre,
        "bars": bars
        or (None if user is not None else morph * model.config.n_bars if morph else DEFAULT_BARS),
        "morph": morph,
        "seed": seed,
        "num_samples": num_samples,
        "binarize": binarize,
        "accompany": None
        if accompany_with is None
        else ("score" if isinstance(accompany_with, symusic.Score) else str(accompany_with)),
        "tracks": None if given_map is None else {names[k]: v for k, v in given_map.items()},
    }
    songs = []
    for i, score in enumerate(scores):
        check = None
        if index is not None:
            judged = score.copy()
            if given_map is not None:  # the user's own parts are not the model's to be judged
                judged.tracks = [t for k, t in enumerate(score.tracks) if k not in given_map]
            result = check_originality(judged, index)
            check = OriginalityCheck(result, is_near_copy(result), index_source)
        extra = {"accompaniment_fit_f1": round(fits[i], 4)} if fits else {}
        songs.append(
            GeneratedSong(score, [], loaded.name, {**params, **extra, "sample": i}, elapsed, 0, check)
        )
    return songs


# ---- MuseMorphose -------------------------------------------------------------------------------------------


def _generate_musemorphose(
    loaded: LoadedModel,
    *,
    style: str | None,
    bars: int,
    primer: symusic.Score | None,
    primer_bars: int | None,
    plan: list[tuple[int | None, int | None] | None],
    temperature: float,
    top_p: float | None,
    seed: int,
    num_samples: int,
    candidates: int,
    progress: ProgressFn | None,
) -> tuple[list[list[int]], list[symusic.Score], list[int]]:
    """Tokens, scores and where each song's new music starts (token index) for MuseMorphose, whose songs are
    sampled one at a time, each as a batch of ``candidates`` rows."""
    model, tok = loaded.sampler(candidates)[0], loaded.tokenizer
    assert isinstance(model, MuseMorphose) and isinstance(tok, RemiTokenizer)
    sampling = {"temperature": temperature, "top_p": top_p, "style": style, "candidates": candidates}
    if primer is None:
        songs = morph_generate(
            model, tok, bars=bars, plan=plan, num_samples=num_samples, seed=seed, progress=progress,
            **sampling,
        )  # fmt: skip
        return [s.tokens for s in songs], [s.score for s in songs], [0] * len(songs)
    enc = tok.encode(primer)
    if len(enc.bar_starts) == 0:
        raise ValueError("the primer holds no notes to continue")
    source = primer
    if primer_bars is not None and primer_bars < len(enc.bar_starts):
        primer = tok.decode(enc.ids[: enc.bar_starts[primer_bars]])
    tokens, scores, starts = [], [], []
    for i in range(num_samples):
        part = scaled_progress(progress, i / num_samples, 1 / num_samples)
        song = continue_piece(
            model, tok, primer, bars=bars, plan=plan, seed=seed + i, progress=part, **sampling
        )
        kept = len(song.rhythm) - bars  # the primer's bars come first, unchanged
        bar_at = [k for k, t in enumerate(song.tokens) if t == tok.bar_id]
        tokens.append(song.tokens)
        scores.append(keep_source_bars(source, song.score, range(kept), f"{loaded.name} continuation"))
        starts.append(bar_at[kept] if kept < len(bar_at) else len(song.tokens))
    return tokens, scores, starts


# ---- the entry point ------------------------------------------------------------------------------------------


def _with_primer(
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


def _originality(
    loaded: LoadedModel, index: OriginalityIndex | str | Path | None
) -> tuple[OriginalityIndex | None, str]:
    if index is None:
        found = loaded.originality_index
        return found, "" if found is None else str(loaded.path / ORIGINALITY_FILE)
    if isinstance(index, OriginalityIndex):
        return index, index.source
    return OriginalityIndex.load(index), str(index)


def _bars_and_plan(
    loaded: LoadedModel, bars: int | None, style: str | None, attributes: AttributePlan | None
) -> tuple[int, list[Any]]:
    """Checked bar count and per-bar attribute plan of a REMI-token family (unknown styles fail here, listing the
    known ones)."""
    bars = DEFAULT_BARS if bars is None else bars
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    if style is not None:
        loaded.tokenizer.style_token(style)
    return bars, _attribute_list(attributes, bars)


def generate_song(
    model: str | Path | LoadedModel,
    *,
    style: str | None = None,
    bars: int | None = None,
    seconds: float | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = 0.95,
    seed: int | None = None,
    num_samples: int = 1,
    primer: str | Path | symusic.Score | None = None,
    primer_bars: int | None = None,
    attributes: AttributePlan | None = None,
    density: int | None = None,
    pitch_histogram: Sequence[float] | None = None,
    progress: ProgressFn | None = None,
    originality_index: OriginalityIndex | str | Path | None = None,
    device: str | torch.device = "cpu",
    accompany: str | Path | symusic.Score | None = None,
    tracks: str | Mapping[str, int] | None = None,
    binarize: str = "threshold",
    morph: int | None = None,
    candidates: int = 1,
) -> list[GeneratedSong]:
    """Sample ``num_samples`` songs from ``model`` (a shipped name, a checkpoint directory, or `get_model`'s
    result); see the module docstring for what each family accepts. ``bars`` (REMI, default 16) and
    ``seconds`` (Performance RNN, default 30) count the *new* music after a primer. ``attributes`` is a per-bar
    plan of (rhythm class, polyphony class) pairs, a list or ``{bar: pair}``, ``None`` where the model chooses.
    ``seed=None`` draws a seed, recorded in each song's params so any song can be made again.
    ``progress(fraction)`` is called after every sampling step. Originality is checked against
    ``originality_index`` or, if none is given, the model's own ``originality.npz`` when it ships one; a primer
    is left out of the check (it is the user's music, not the model's).

    A MuseGAN takes ``style`` as its genre, ``bars`` (chained 4-bar phrases), ``binarize`` ('threshold' or
    'bernoulli'), or ``accompany`` (a music file or score) with ``tracks`` ('piano:0': model track name : the
    file's track index): the named tracks are kept exactly and the model plays the others; ``morph=N`` makes
    one piece of N phrases walking in latent space from one sampled phrase to another.
    A MuseMorphose takes ``candidates``: tries per bar, the one nearest the bar's asked classes kept.
    """
    loaded = model if isinstance(model, LoadedModel) else get_model(model, device)
    _check_sampling(temperature, top_k, top_p, num_samples)
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    if candidates != 1 and loaded.family != "musemorphose":
        raise ValueError(
            f"candidates (tries per bar) is for a MuseMorphose; model {loaded.name} is a {loaded.family}"
        )
    if primer_bars is not None and primer_bars < 1:
        raise ValueError(f"primer_bars must be >= 1, got {primer_bars}")
    if primer_bars is not None and primer is None:
        raise ValueError("primer_bars needs a primer")
    family = loaded.family
    if family == "musegan":
        if seconds is not None or primer is not None or attributes is not None or density is not None:
            raise ValueError(
                f"model {loaded.name} is a MuseGAN: ask for bars, a genre (style) or an accompaniment, "
                "not seconds, a primer, attributes or density"
            )
        if pitch_histogram is not None:
            raise ValueError(f"model {loaded.name} is a MuseGAN: it takes no pitch classes")
        index, index_source = _originality(loaded, originality_index)
        return _generate_musegan(
            loaded, genre=style, bars=bars, num_samples=num_samples, accompany_with=accompany, tracks=tracks,
            seed=random.SystemRandom().randrange(2**31) if seed is None else int(seed), binarize=binarize,
            morph=morph, index=index, index_source=index_source, progress=progress,
        )  # fmt: skip
    elif accompany is not None or tracks is not None:
        raise ValueError(f"model {loaded.name} ({family}) cannot accompany: use a MuseGAN")
    elif morph is not None:
        raise ValueError(f"morph (a walk between two phrases) is for a MuseGAN; {loaded.name} is a {family}")
    if family == "musemorphose":
        if seconds is not None or density is not None or pitch_histogram is not None or top_k is not None:
            raise ValueError(
                f"model {loaded.name} is a MuseMorphose: ask for bars, style, per-bar attributes, temperature "
                "and top_p, not seconds, density, pitch classes or top_k"
            )
        bars, plan = _bars_and_plan(loaded, bars, style, attributes)
        seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
        index, index_source = _originality(loaded, originality_index)
        start = time.perf_counter()
        tokens, scores, new_at = _generate_musemorphose(
            loaded, style=style, bars=bars, primer=None if primer is None else _read_primer(primer),
            primer_bars=primer_bars, plan=plan, temperature=temperature, top_p=top_p, seed=seed,
            num_samples=num_samples, candidates=candidates, progress=progress,
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        if progress is not None:
            progress(1.0)
        params = {
            "model": loaded.name, "family": family, "style": style, "bars": bars, "temperature": temperature,
            "top_p": top_p, "seed": seed, "num_samples": num_samples, "candidates": candidates,
            **loaded.precision_params(candidates),
            "primer": None if primer is None else (str(primer) if not isinstance(primer, symusic.Score) else "score"),
            "primer_bars": primer_bars, "attributes": [None if a is None else list(a) for a in plan] or None,
        }  # fmt: skip
        songs = []
        for i, (ids, score, k) in enumerate(zip(tokens, scores, new_at, strict=True)):
            check = None
            if index is not None:
                judged = score if primer is None else loaded.tokenizer.decode(ids[k:])
                result = check_originality(judged, index)
                check = OriginalityCheck(result, is_near_copy(result), index_source)
            songs.append(
                GeneratedSong(score, ids, loaded.name, {**params, "sample": i}, elapsed, len(ids) - k, check)
            )
        return songs
    is_remi = isinstance(loaded.tokenizer, RemiTokenizer) and family == "transformer"
    is_perf = isinstance(loaded.tokenizer, PerformanceTokenizer) and family == "performance_rnn"
    if not is_remi and not is_perf:
        raise ValueError(f"cannot generate songs with a {family} model on {loaded.tokenizer.name} tokens")
    if is_remi:
        if seconds is not None or density is not None or pitch_histogram is not None:
            raise ValueError(
                f"model {loaded.name} is a REMI Transformer: ask for bars, style and per-bar attributes, "
                "not seconds, density or pitch classes"
            )
        bars, plan = _bars_and_plan(loaded, bars, style, attributes)
    else:
        if bars is not None or style is not None or attributes is not None:
            raise ValueError(
                f"model {loaded.name} is a Performance RNN: ask for seconds, density and pitch classes, "
                "not bars, style or per-bar attributes"
            )
        seconds = DEFAULT_SECONDS if seconds is None else seconds
        if not seconds > 0 or not math.isfinite(seconds):
            raise ValueError(f"seconds must be > 0, got {seconds}")
        if density is not None and not 0 <= density < N_DENSITY_CLASSES:
            raise ValueError(f"density must be a class in 0..{N_DENSITY_CLASSES - 1}, got {density}")
        if pitch_histogram is not None:
            hist = np.asarray(pitch_histogram, dtype=np.float64)
            if hist.shape != (12,) or (hist < 0).any() or not hist.sum() > 0:
                raise ValueError(
                    "pitch_histogram must be 12 non-negative weights (C, C#, ..., B) with a positive sum"
                )
    primer_score = None if primer is None else _read_primer(primer)
    index, index_source = _originality(loaded, originality_index)
    seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    gen = torch.Generator(device=loaded.device).manual_seed(seed)
    sampling = {"temperature": temperature, "top_k": top_k, "top_p": top_p}

    start = time.perf_counter()
    primer_n = 0
    if is_remi:
        out, prompt_len, primer_n = _generate_remi(
            loaded, gen, style=style, bars=bars, primer=primer_score, primer_bars=primer_bars, plan=plan,
            sampling=sampling, num_samples=num_samples, progress=progress,
        )  # fmt: skip
        sequences = out.sequences()
    else:
        out, prompt_len = _generate_performance(
            loaded, gen, seconds=seconds, primer=primer_score, density=density, pitch_histogram=pitch_histogram,
            sampling=sampling, num_samples=num_samples, progress=progress,
        )  # fmt: skip
        sequences = [close_open_notes(s, loaded.tokenizer) for s in out.sequences()]
    scores = [loaded.tokenizer.decode(s) for s in sequences]
    if primer_score is not None:  # the primer's own parts where the song keeps it
        scores = [
            _with_primer(loaded, primer_score, sc, ids[:prompt_len], primer_n)
            for sc, ids in zip(scores, sequences, strict=True)
        ]
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress(1.0)

    params: dict[str, Any] = {
        "model": loaded.name,
        "family": family,
        "style": style,
        "bars": bars,
        "seconds": seconds,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "seed": seed,
        **loaded.precision_params(num_samples),
        "num_samples": num_samples,
        "primer": None
        if primer is None
        else (str(primer) if not isinstance(primer, symusic.Score) else "score"),
        "primer_bars": primer_bars,
        "primer_bars_used": primer_n if is_remi and primer is not None else None,
        "attributes": [None if a is None else list(a) for a in plan] if is_remi and plan else None,
        "density": density,
        "pitch_histogram": None if pitch_histogram is None else [float(x) for x in pitch_histogram],
    }
    songs = []
    for i, (ids, score) in enumerate(zip(sequences, scores, strict=True)):
        check = None
        if index is not None:
            new = ids[prompt_len - 1 :] if is_remi and primer is not None else ids[prompt_len:]
            judged = loaded.tokenizer.decode(new) if primer is not None else score
            result = check_originality(judged, index)
            check = OriginalityCheck(result, is_near_copy(result), index_source)
        songs.append(
            GeneratedSong(
                score=score,
                tokens=ids,
                model=loaded.name,
                params={**params, "sample": i},
                seconds=elapsed,
                new_tokens=len(ids) - prompt_len,
                originality=check,
            )
        )
    return songs


def restyle_song(
    model: str | Path | LoadedModel,
    piece: str | Path | symusic.Score,
    *,
    rhythm: int | Sequence[int | None] | None = None,
    polyphony: int | Sequence[int | None] | None = None,
    bars: Sequence[int] | None = None,
    keep_other_bars: bool = True,
    style: str | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    candidates: int = 1,
    guidance: float = DEFAULT_GUIDANCE,
    seed: int | None = None,
    num_samples: int = 1,
    progress: ProgressFn | None = None,
    originality_index: OriginalityIndex | str | Path | None = None,
    device: str | torch.device = "cpu",
) -> list[GeneratedSong]:
    """Re-style ``piece`` with a MuseMorphose: sample i re-plays the chosen ``bars`` (0-based, default all) from
    their own latents with ``rhythm``/``polyphony`` shifted (an int) or set (one class per chosen bar, ``None``
    keeping a bar's own), each bar the nearest to its asked classes of ``candidates`` tries, the change of
    classes amplified by ``guidance``, seeded ``seed + i`` (see `museforge.generation.musemorphose.transfer`).
    The originality check judges only the re-played bars when the others are kept: those are the user's own
    music.
    """
    loaded = model if isinstance(model, LoadedModel) else get_model(model, device)
    rows = decoded_rows(candidates, guidance)
    (net, _), tok = loaded.sampler(rows), loaded.tokenizer
    if not isinstance(net, MuseMorphose) or not isinstance(tok, RemiTokenizer):
        raise ValueError(f"model {loaded.name} ({loaded.family}) cannot re-style: use a MuseMorphose")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    source = _read_primer(piece, "piece")
    seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    index, index_source = _originality(loaded, originality_index)
    songs = []
    for i in range(num_samples):
        start = time.perf_counter()
        morphed = morph_transfer(
            net, tok, source, rhythm=rhythm, polyphony=polyphony, bars=bars, keep_other_bars=keep_other_bars,
            style=style, seed=seed + i, temperature=temperature, top_p=top_p, candidates=candidates,
            guidance=guidance,
            progress=None if progress is None else scaled_progress(progress, i / num_samples, 1 / num_samples),
        )  # fmt: skip
        elapsed = time.perf_counter() - start
        n_bars = len(morphed.rhythm)
        chosen = range(n_bars) if bars is None or not keep_other_bars else sorted(set(bars))
        bar_at = [j for j, t in enumerate(morphed.tokens) if t == tok.bar_id] + [len(morphed.tokens)]
        new = [t for b in chosen for t in morphed.tokens[bar_at[b] : bar_at[b + 1]]]
        check = None
        if index is not None:
            result = check_originality(tok.decode(new), index)
            check = OriginalityCheck(result, is_near_copy(result), index_source)
        params = {
            "model": loaded.name, "family": loaded.family, "style": style, "seed": seed, "sample": i,
            "candidates": candidates, "guidance": guidance, **loaded.precision_params(rows), "source_bars": n_bars,
            "restyled_bars": [int(b) for b in chosen],
            "attributes": [[int(r), int(p)] for r, p in zip(morphed.rhythm, morphed.polyphony, strict=True)],
        }  # fmt: skip
        score = keep_source_bars(
            source, morphed.score, set(range(n_bars)) - set(chosen), f"{loaded.name} re-styled"
        )
        songs.append(GeneratedSong(score, morphed.tokens, loaded.name, params, elapsed, len(new), check))
    if progress is not None:
        progress(1.0)
    return songs


__all__ = [
    "DEFAULT_BARS",
    "DEFAULT_SECONDS",
    "HALF_FAMILIES",
    "GeneratedSong",
    "LoadedModel",
    "OriginalityCheck",
    "PerformanceLength",
    "attribute_plan",
    "clear_model_cache",
    "close_open_notes",
    "generate_song",
    "get_model",
    "half_precision_kl",
    "restyle_song",
]
