"""Serving models: loading each once (cached, with float16 weights where they agree with float32 and are faster
on this machine) and making songs from any family's request.

``generate_song(model, **options)`` is the Python entry point: the options are the model's family's request
fields (see ``museforge families`` or each ``*Request`` class), checked and filled with that model's defaults
exactly as the command line and the API do. Devices and precision are chosen by the caller.
"""

from __future__ import annotations

import contextlib
import copy
import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from museforge.families import Family, RequestError, get_family, load_checkpoint
from museforge.families.base import Limits, ProgressFn
from museforge.families.loaded import HALF_ALWAYS, GeneratedSong, LoadedModel, read_piece
from museforge.generation.precision import (
    PrecisionDecision,
    cached_decision,
    measure_precision,
    save_decision,
    unfaithful,
)
from museforge.metrics.originality import OriginalityIndex
from museforge.models.checkpoint import WEIGHTS_FILE, Checkpoint
from museforge.models.zoo import ORIGINALITY_FILE, locate_model, model_info
from museforge.tokenizers import TOKENIZERS
from museforge.tokenizers.base import TokenTokenizer
from museforge.tokenizers.pianoroll import PianoRollTokenizer

if TYPE_CHECKING:
    import symusic

PRECISIONS = ("fp32", "fp16", "auto")
HALF_PROBE_TOKENS = 256  # length of the probe on which a float16 Transformer must agree with float32
HALF_MAX_KL = 1e-3  # mean KL(fp32 || fp16) per next-token distribution, nats; the shipped model gives ~5e-6
# With "auto", batches up to this size sample in float16 where a probe on this machine finds float16 faster
# (`museforge.generation.precision`): at batch 1 reading the weights can be the bottleneck and float16 halves
# it (1.8x the tokens/s on a 2-core EPYC; no faster on an Intel Xeon); by batch 4 the products are
# compute-bound, and CPUs without float16 arithmetic convert every element, so float32 catches up (and is 1.25x
# faster at batch 8).
HALF_AUTO_MAX_BATCH = 4

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
        family = get_family(ckpt.model_name)
        half, decision = None, None
        if precision == "fp16":
            half = _half_precision(family, ckpt)
        elif precision == "auto":
            half, decision = _auto_precision(family, ckpt, path / WEIGHTS_FILE, cache_dir)
        tokenizer = _tokenizer_from_state(ckpt.tokenizer, path)
        index_file = path / ORIGINALITY_FILE
        index = OriginalityIndex.load(index_file) if index_file.is_file() else None
        up_to = HALF_AUTO_MAX_BATCH if precision == "auto" else HALF_ALWAYS
        loaded = LoadedModel(
            name,
            path,
            ckpt,
            tokenizer,
            dev,
            index,
            family.styles(ckpt.model, tokenizer),
            half,
            up_to if half is not None else 0,
            decision,
            version,
        )
        for old in [k for k in _CACHE if k[:3] == key[:3]]:  # an older version of the same weights
            del _CACHE[old]
        _CACHE[key] = loaded
        return loaded


def half_precision_kl(model: nn.Module, half: nn.Module, tokens: int = HALF_PROBE_TOKENS) -> float:
    """Mean KL(p_fp32 || p_fp16) in nats over the next-token distributions of a fixed random probe sequence
    (inf when float16 overflows). Random tokens drive the activations harder than music does, so a model that
    passes on them is safe on real prompts."""
    family = get_family(model.config.model_name)
    n = min(tokens, model.config.max_seq_len)
    device = next(model.parameters()).device
    probe = torch.randint(model.config.vocab_size, (1, n), generator=torch.Generator().manual_seed(0))
    probe = probe.to(device)
    with torch.inference_mode():
        ref = family.probe_logits(model, probe, torch.Generator().manual_seed(1)).float().log_softmax(-1)
        low = family.probe_logits(half, probe, torch.Generator().manual_seed(1)).float().log_softmax(-1)
    if not torch.isfinite(low).all():
        return math.inf
    return float((ref.exp() * (ref - low)).sum(-1).mean())


def _half_precision(family: Family, ckpt: Checkpoint) -> nn.Module:
    """A float16 copy of the model of a family that can sample in float16; an error for the others."""
    if not family.half_precision:
        raise ValueError(f"precision fp16 is not for a {family.label}: it samples in fp32")
    return copy.deepcopy(ckpt.model).half().eval()


def _auto_precision(
    family: Family, ckpt: Checkpoint, weights: Path, cache_dir: Path | None
) -> tuple[nn.Module | None, PrecisionDecision | None]:
    """The float16 copy "auto" samples with (None: float32), and the decision: this machine's recorded one, else
    the KL check and the speed probe, recorded for the next load."""
    if not family.half_precision:
        return None, None
    device = next(ckpt.model.parameters()).device
    decision = cached_decision(weights, device, cache_dir)
    if decision is not None:
        return (_half_precision(family, ckpt) if decision.precision == "fp16" else None), decision
    model, half = ckpt.model, _half_precision(family, ckpt)
    kl = half_precision_kl(model, half)
    if kl < HALF_MAX_KL:
        decision = measure_precision(model, half, weights, family.conditioned_decoder)
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


def generate_song(
    model: str | Path | LoadedModel,
    *,
    primer: str | Path | symusic.Score | None = None,
    accompany: str | Path | symusic.Score | None = None,
    operation: str | None = None,
    progress: ProgressFn | None = None,
    originality_index: OriginalityIndex | str | Path | None = None,
    device: str | torch.device = "cpu",
    limits: Limits | None = None,
    **options: Any,
) -> list[GeneratedSong]:
    """Songs from ``model`` (a shipped name, a checkpoint folder, or `get_model`'s result). ``options`` are its
    family's request fields; an option the family does not take is refused by name. ``primer`` is a piece to
    continue, ``accompany`` one whose ``tracks`` a MuseGAN keeps. ``operation`` defaults to generate or, with
    such a piece, to the operation an option belongs to alone (``infill`` -> infill, ``restyle_bars`` ->
    restyle), else continue / accompany; it may be a family's own, e.g. ``restyle`` with ``primer`` as the piece.
    ``seed=None`` draws a seed, recorded in each song's params so any song can be made again. ``progress(f)`` is
    called as sampling goes. Originality is checked against ``originality_index`` or, if none is given, the
    model's own ``originality.npz``; a primer is left out of the check (it is the user's music, not the model's).
    """
    from museforge.families.loaded import LoadedModel
    from museforge.families.serving import get_model

    loaded = model if isinstance(model, LoadedModel) else get_model(model, device)
    family = get_family(loaded.family)
    if primer is not None and accompany is not None:
        raise RequestError("give a primer to continue or a piece to accompany, not both")
    piece = primer if primer is not None else accompany
    if operation is None and piece is not None:
        operation = (
            "accompany"
            if accompany is not None
            else family.implied_operation(options)
            or next(o.name for o in family.operations if o.needs_source)
        )
    request = family.parse({**options, "operation": operation or "generate"})
    needs = family.operation(request.operation).needs_source
    if needs != (piece is not None):
        raise RequestError(
            f"{request.operation} needs a source piece (primer=...)"
            if needs
            else f"{request.operation} starts from nothing: give no primer"
        )
    source = None if piece is None else read_piece(piece, "primer" if primer is not None else "accompaniment")
    request = family.resolve(request, model_info(loaded.path, loaded.name), limits)
    return family.sample(loaded, request, source, progress, originality_index)
