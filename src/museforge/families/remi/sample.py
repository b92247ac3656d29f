"""Sampling a REMI Transformer: the prompt is ``[Style_x]`` (or a primer's REMI tokens), the length is counted in
bars by the REMI grammar mask, and a per-bar plan of rhythm/polyphony classes is forced through the same mask."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import symusic
import torch
from torch import Tensor

from museforge.families.base import ProgressFn
from museforge.families.fields import plan_of
from museforge.families.loaded import (
    GeneratedSong,
    LoadedModel,
    attribute_list,
    judge_originality,
    originality_of,
    with_primer,
)
from museforge.families.remi.model import TransformerLM
from museforge.families.remi.request import RemiRequest
from museforge.generation.decode import Generated, generate_transformer
from museforge.generation.remi_grammar import RemiGrammar, stop_at_eos
from museforge.metrics.originality import OriginalityIndex
from museforge.tokenizers.remi import RemiTokenizer

MAX_BAR_TOKENS = 384  # REMI tokens one bar may hold before it must end (dense piano bars stay well below)


def remi_prompt(
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


def decode_remi(
    loaded: LoadedModel,
    request: RemiRequest,
    prompt: list[int],
    budget: int,
    gen: torch.Generator,
    grammar: RemiGrammar,
    stop: Callable[[Tensor], Tensor],
) -> Generated:
    """Sample ``request.num_samples`` rows after ``prompt`` under ``grammar``: in a worker's batch with other
    jobs' songs when there is one (same tokens as alone), else on their own."""
    hooks: dict[str, Any] = {
        "generator": gen, "mask_fn": grammar, "stop_fn": stop, "pad_id": loaded.tokenizer.pad_id,
        "temperature": request.temperature, "top_k": request.top_k, "top_p": request.top_p,
    }  # fmt: skip
    if loaded.batcher is not None and request.num_samples == 1:
        return loaded.batcher.decode(prompt, budget, **hooks)
    model = loaded.sampler(request.num_samples)[0]
    return generate_transformer(model, prompt, budget, num_samples=request.num_samples, **hooks)


def _sample_bars(
    loaded: LoadedModel,
    gen: torch.Generator,
    request: RemiRequest,
    primer: symusic.Score | None,
    plan: list[tuple[int | None, int | None] | None],
    voices: int | None,
    progress: ProgressFn | None,
) -> tuple[Generated, int, int]:
    """Sampled REMI tokens, the prompt length and the primer's bar count.

    The last bar ends where the model ends it, by EOS or by starting another bar (that Bar becomes the EOS,
    `RemiGrammar`'s ``end_with_bar``). Forbidding the Bar there instead hands its probability to the tokens
    still allowed, and a model that wants a new bar then piles notes into the last one (repeated pitches, long
    sustains) until EOS wins: every 8-bar sample of the shipped model did, and lasted 1.5x as long as asked.
    """
    tok, bars = loaded.tokenizer, request.bars
    assert isinstance(tok, RemiTokenizer) and isinstance(loaded.checkpoint.model, TransformerLM)
    prompt, primer_n = remi_prompt(tok, request.style, primer, request.primer_bars)
    total_bars = primer_n + bars
    budget = bars * (MAX_BAR_TOKENS + 8) + 8
    grammar = RemiGrammar(
        tok,
        max_bars=total_bars,
        bar_attributes=[None] * primer_n + plan,
        max_bar_tokens=MAX_BAR_TOKENS,
        end_with_bar=True,
        max_new_tokens=budget,
        max_voices=voices,
    )
    eos = stop_at_eos(tok.eos_id)
    bars_before = sum(t == tok.bar_id for t in prompt)

    def stop(seqs: Tensor) -> Tensor:
        counted = (seqs == tok.bar_id).sum(1)  # [B] Bar tokens, the prompt's included, as the grammar counts
        if progress is not None:
            written = counted.float().mean().item() - bars_before
            progress(min(1.0, max(0.0, written / (bars + 1))))
        return eos(seqs) | (counted > total_bars)

    out = decode_remi(loaded, request, prompt, budget, gen, grammar, stop)
    rows = torch.arange(out.tokens.shape[0])
    ends = out.lengths - 1  # [B] the last token of each row
    closed = out.tokens[rows, ends] == tok.bar_id  # rows the model ended by starting another bar
    out.tokens[rows[closed], ends[closed]] = tok.eos_id
    return out, len(prompt), primer_n


def voices_of(tok: RemiTokenizer, request: RemiRequest) -> int | None:
    """How many parts a multi-track model may write: the asked ``voices``, else the style's usual number (None:
    no cap, as for a single-stream model, which `RemiFamily.check` refuses ``voices``)."""
    if not tok.config.use_programs:
        return None
    return request.voices or tok.config.parts_of(request.style)


def sample_remi(
    loaded: LoadedModel,
    request: RemiRequest,
    primer: symusic.Score | None,
    progress: ProgressFn | None,
    originality: OriginalityIndex | str | Path | None,
) -> list[GeneratedSong]:
    """``request.num_samples`` songs of ``request.bars`` new bars, continuing ``primer`` when one is given."""
    if request.style is not None:
        loaded.tokenizer.style_token(request.style)  # an unknown style fails here, listing the known ones
    plan = attribute_list(plan_of(request.rhythm, request.polyphony), request.bars)
    index, index_source = originality_of(loaded, originality)
    seed = request.drawn_seed()
    gen = torch.Generator(device=loaded.device).manual_seed(seed)
    start = time.perf_counter()
    voices = voices_of(loaded.tokenizer, request)
    out, prompt_len, primer_n = _sample_bars(loaded, gen, request, primer, plan, voices, progress)
    sequences = out.sequences()
    scores = [loaded.tokenizer.decode(s) for s in sequences]
    if primer is not None:  # the primer's own parts where the song keeps it
        scores = [
            with_primer(loaded, primer, sc, ids[:prompt_len], primer_n)
            for sc, ids in zip(scores, sequences, strict=True)
        ]
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress(1.0)
    params: dict[str, Any] = {
        "model": loaded.name, "family": loaded.family, "style": request.style, "bars": request.bars,
        "temperature": request.temperature, "top_k": request.top_k, "top_p": request.top_p, "seed": seed,
        **loaded.precision_params(request.num_samples), "num_samples": request.num_samples,
        "primer": None if primer is None else "score", "primer_bars": request.primer_bars,
        "primer_bars_used": primer_n if primer is not None else None,
        "attributes": [None if a is None else list(a) for a in plan] or None,
    }  # fmt: skip
    if voices is not None:
        params["voices"] = voices
    songs = []
    for i, (ids, score) in enumerate(zip(sequences, scores, strict=True)):
        judged = score if primer is None else loaded.tokenizer.decode(ids[prompt_len - 1 :])
        check = judge_originality(judged, index, index_source)
        songs.append(
            GeneratedSong(
                score, ids, loaded.name, {**params, "sample": i}, elapsed, len(ids) - prompt_len, check
            )
        )
    return songs
