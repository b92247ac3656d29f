"""Filling in bars of a piece, or one part of it, with a REMI Transformer trained to fill in the middle
(`museforge.tokenizers.infill`).

The prompt is the piece with the bars to fill replaced by placeholders, then ``FillStart``; the model writes those
bars and ``FillEnd``, under the REMI grammar (so exactly that many bars, each well formed). The piece's other bars
come back from its own tracks, note for note (`keep_source_bars`); only the filled bars are the model's.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import symusic
import torch

from museforge.families.base import ProgressFn, RequestError
from museforge.families.fields import plan_of
from museforge.families.loaded import (
    GeneratedSong,
    LoadedModel,
    attribute_list,
    judge_originality,
    originality_of,
)
from museforge.families.remi.request import RemiRequest
from museforge.families.remi.sample import MAX_BAR_TOKENS, decode_remi
from museforge.generation.remi_grammar import RemiGrammar, stop_at_eos
from museforge.generation.splice import keep_source_bars, replace_track_bars
from museforge.metrics.originality import OriginalityIndex
from museforge.tokenizers.infill import arrange, arrange_track
from museforge.tokenizers.remi import RemiEncoding, RemiTokenizer


def check_infill(loaded: LoadedModel, request: RemiRequest, source: symusic.Score) -> RemiEncoding:
    """The source's REMI encoding, once the model can fill in and the bars asked for are inside the piece."""
    tok = loaded.tokenizer
    assert isinstance(tok, RemiTokenizer)
    if not tok.fill_ids:
        raise RequestError(
            f"model {loaded.name} was not trained to fill in (train it with --infill); it can continue a piece"
        )
    last = request.infill_span()[1]
    enc = tok.encode(source, style=request.style)
    n = len(enc.bar_starts)
    if last >= n:
        raise RequestError(f"infill asks for bar {last + 1}, but the piece has {n} bar{'s' * (n != 1)}")
    return enc


def bar_meters(tok: RemiTokenizer, enc: RemiEncoding, first: int, last: int) -> list[int | None]:
    """The TimeSig token of each bar ``first..last`` of ``enc`` (None for a bar without one): the filled bars keep
    the piece's meter, so they fit the bar lines around them."""
    ids, out = enc.ids.tolist(), []
    for start in enc.bar_starts.tolist()[first : last + 1]:
        head = ids[start + 1 : start + 4]  # Bar, [Rhythm Polyphony], TimeSig
        out.append(next((t for t in head if tok.token_name(t).startswith("TimeSig_")), None))
    return out


def context(enc: RemiEncoding, first: int, last: int, room: int) -> tuple[int, int]:
    """The bars ``lo..hi`` (hi exclusive) around ``first..last`` whose tokens fit in ``room``: the nearest bars
    on either side in turn, so the model hears what leads in and what follows."""
    starts = [*enc.bar_starts.tolist(), len(enc.ids)]
    size = lambda a, b: starts[b] - starts[a]  # noqa: E731 - tokens of bars a..b-1
    lo, hi = first, last + 1
    while True:
        grown = False
        for lo2, hi2 in ((lo - 1, hi), (lo, hi + 1)):
            if lo2 >= 0 and hi2 < len(starts) and size(lo2, hi2) - size(first, last + 1) <= room:
                lo, hi, grown = lo2, hi2, True
        if not grown:
            return lo, hi


def infill_prompt(
    tok: RemiTokenizer, enc: RemiEncoding, first: int, last: int, window: int
) -> tuple[list[int], int]:
    """The prompt (style, the bars around the gap with placeholders in it, ``FillStart``) and the tokens left
    for the filled bars within the model's ``window``: room for 1.5 times what the gap held (at most three
    quarters of the window), so the prompt never slides out of the model's context while it writes."""
    k = last - first + 1
    starts = enc.bar_starts.tolist()
    own = (starts[last + 1] if last + 1 < len(starts) else len(enc.ids)) - starts[first]
    reserve = min(max(own * 3 // 2 + 16, 16 * k), window * 3 // 4)
    lo, hi = context(enc, first, last, max(0, window - reserve - 2 * k - 4))
    ids = enc.ids.tolist()
    head = ids[: starts[0]] if lo == 0 else [t for t in ids[:1] if tok.is_control([t])[0]]  # style, if any
    end = starts[hi] if hi < len(starts) else len(ids)
    body_starts = [len(head) + s - starts[lo] for s in starts[lo:hi]]
    prompt, _ = arrange(head + ids[starts[lo] : end], body_starts, first - lo, last - lo, tok)
    return prompt, window - len(prompt)


def infill_remi(
    loaded: LoadedModel,
    request: RemiRequest,
    source: symusic.Score | None,
    progress: ProgressFn | None,
    originality: OriginalityIndex | str | Path | None,
) -> list[GeneratedSong]:
    """``request.num_samples`` versions of ``source`` with its ``request.infill`` bars written again."""
    if source is None:
        raise RequestError("infill needs a piece to fill in")
    enc = check_infill(loaded, request, source)
    tok = loaded.tokenizer
    assert isinstance(tok, RemiTokenizer)
    first, last = request.infill_span()
    k = last - first + 1
    plan = attribute_list(plan_of(request.rhythm, request.polyphony), k)
    model = loaded.sampler(request.num_samples)[0]
    prompt, budget = infill_prompt(tok, enc, first, last, model.config.max_seq_len)
    seed = request.drawn_seed()
    start = time.perf_counter()
    meters = bar_meters(tok, enc, first, last)
    middles = _sample_middles(loaded, request, prompt, budget, plan, meters, seed, progress)
    elapsed = time.perf_counter() - start
    params = _params(loaded, request, seed, plan, k)
    index, index_source = originality_of(loaded, originality)
    label = f"{loaded.name} fill-in"
    ids, starts = enc.ids.tolist(), enc.bar_starts.tolist()
    after = starts[last + 1] if last + 1 < len(starts) else len(ids)
    kept = [b for b in range(len(starts)) if not first <= b <= last]
    songs = []
    for i, middle in enumerate(middles):
        full = [*ids[: starts[first]], *middle, *ids[after:]]
        score = keep_source_bars(source, tok.decode(full), kept, label)
        check = judge_originality(tok.decode(middle), index, index_source)
        songs.append(
            GeneratedSong(score, full, loaded.name, {**params, "sample": i}, elapsed, len(middle), check)
        )
    if progress is not None:
        progress(1.0)
    return songs


def _sample_middles(
    loaded: LoadedModel,
    request: RemiRequest,
    prompt: list[int],
    budget: int,
    plan: list[tuple[int | None, int | None] | None],
    meters: list[int | None],
    seed: int,
    progress: ProgressFn | None,
) -> list[list[int]]:
    """The filled bars of each sample (their Bar tokens included, ``FillEnd`` not), each in the meter
    ``meters`` gives it (a TimeSig id, the source's)."""
    tok = loaded.tokenizer
    assert isinstance(tok, RemiTokenizer)
    end = tok.fill_ids["FillEnd"]
    around = sum(t == tok.bar_id for t in prompt)  # the placeholders' Bar tokens included
    total = around + len(plan)
    grammar = RemiGrammar(
        tok,
        max_bars=total,
        bar_attributes=[None] * around + plan,
        max_bar_tokens=MAX_BAR_TOKENS,
        max_new_tokens=budget,
        end_token="FillEnd",
        bar_time_signatures=[None] * around + meters,
    )
    at_end = stop_at_eos(end)

    def stop(seqs: torch.Tensor) -> torch.Tensor:
        if progress is not None:
            written = (seqs[:, len(prompt) :] == tok.bar_id).sum(1).float().mean().item()
            progress(min(1.0, written / (len(plan) + 1)))
        return at_end(seqs)

    gen = torch.Generator(device=loaded.device).manual_seed(seed)
    out = decode_remi(loaded, request, prompt, budget, gen, grammar, stop)
    return [[t for t in seq[len(prompt) :] if t not in (end, tok.pad_id)] for seq in out.sequences()]


def _params(
    loaded: LoadedModel, request: RemiRequest, seed: int, plan: list[Any], bars: int
) -> dict[str, Any]:
    return {
        "model": loaded.name, "family": loaded.family, "style": request.style, "bars": bars,
        "infill": request.infill, "temperature": request.temperature, "top_k": request.top_k,
        "top_p": request.top_p, "seed": seed, **loaded.precision_params(request.num_samples),
        "num_samples": request.num_samples, "attributes": [None if a is None else list(a) for a in plan] or None,
    }  # fmt: skip


def with_suffix(enc: RemiEncoding, last: int, other: RemiEncoding) -> RemiEncoding:
    """``enc`` up to bar ``last`` followed by ``other``'s bars from its first: the same gap between a piece's
    own lead-in and another piece's continuation (the seam test's control)."""
    ids, starts = enc.ids.tolist(), enc.bar_starts.tolist()
    cut = starts[last + 1] if last + 1 < len(starts) else len(ids)
    tail = other.ids[other.bar_starts[0] :].tolist() if len(other.bar_starts) else []
    shift = cut - int(other.bar_starts[0]) if len(other.bar_starts) else 0
    joined = [*starts[: last + 1], *(int(s) + shift for s in other.bar_starts)]
    return RemiEncoding(np.asarray([*ids[:cut], *tail], dtype=np.int32), np.asarray(joined, dtype=np.int64))


@torch.no_grad()
def middle_nll(model: torch.nn.Module, tok: RemiTokenizer, enc: RemiEncoding, first: int, last: int) -> float:
    """Mean NLL (nats/token) of bars ``first..last`` of ``enc`` and ``FillEnd``, given the fill-in prompt built
    around them: the measure of how well the filled bars fit the music on both sides."""
    prompt, _ = infill_prompt(tok, enc, first, last, model.config.max_seq_len)
    starts = enc.bar_starts.tolist()
    after = starts[last + 1] if last + 1 < len(starts) else len(enc.ids)
    middle = [*enc.ids[starts[first] : after].tolist(), tok.fill_ids["FillEnd"]]
    ids = torch.tensor([(prompt + middle)[: model.config.max_seq_len]])  # [1, T]
    logits = model(ids)[0][0, len(prompt) - 1 : -1].float()  # [M, V]: each predicts the next middle token
    return float(torch.nn.functional.cross_entropy(logits, ids[0, len(prompt) :]).item())


def check_track(loaded: LoadedModel, request: RemiRequest, source: symusic.Score) -> tuple[RemiEncoding, int]:
    """The source's REMI encoding and the voice program of ``request.track``, once the model writes voices
    (multi-track REMI with the fill tokens), the track is a pitched one of the piece and the bars are inside it."""
    tok = loaded.tokenizer
    assert isinstance(tok, RemiTokenizer) and request.track is not None
    if not tok.fill_ids or not tok.config.use_programs:
        raise RequestError(
            f"model {loaded.name} cannot write one part again: it needs multi-track REMI (use_programs) and "
            "fill-in training (--infill)"
        )
    index = request.track - 1
    n = len(source.tracks)
    if index >= n or source.tracks[index].is_drum or not len(source.tracks[index].notes):
        raise RequestError(f"track {request.track} is not a pitched part with notes of this {n}-track piece")
    enc = tok.encode(source, style=request.style)
    if request.infill is not None and request.infill_span()[1] >= len(enc.bar_starts):
        raise RequestError(f"infill asks for bar {request.infill_span()[1] + 1}, but the piece is shorter")
    pitched = [i for i, t in enumerate(source.tracks) if not t.is_drum]
    voice = list(enc.programs)[pitched.index(index)]
    return enc, voice


def track_prompt(
    tok: RemiTokenizer, enc: RemiEncoding, voice: int, first: int, last: int, window: int
) -> tuple[list[int], int]:
    """The prompt (style, bars ``first..last`` without voice ``voice``, ``FillStart``) and the tokens left for the
    voice, as the model was trained (`museforge.tokenizers.infill.arrange_track`): a `RequestError` when the
    bars and room for the voice (1.5 times what it held, at least 16 tokens a bar) do not fit the ``window``."""
    ids, starts = enc.ids.tolist(), [*enc.bar_starts.tolist(), len(enc.ids)]
    head = [t for t in ids[: starts[0]] if tok.is_control([t])[0]]
    prompt, middle = arrange_track(head + ids[starts[first] : starts[last + 1]], voice, tok)
    reserve = max(len(middle) * 3 // 2, 16 * (last - first + 1))
    if len(prompt) + reserve > window:
        raise RequestError(
            f"bars {first + 1}-{last + 1} with every part take {len(prompt)} tokens and the part needs about "
            f"{reserve} more, past the model's {window}-token context: fill fewer bars (infill='{first + 1}-…')"
        )
    return prompt, window - len(prompt)


def fill_track_remi(
    loaded: LoadedModel,
    request: RemiRequest,
    source: symusic.Score | None,
    progress: ProgressFn | None,
    originality: OriginalityIndex | str | Path | None,
) -> list[GeneratedSong]:
    """``request.num_samples`` versions of ``source`` with track ``request.track`` written again in the
    ``infill`` bars (the whole piece without them), knowing every other part; all else is the source's."""
    if source is None:
        raise RequestError("filling in a part needs a piece")
    enc, voice = check_track(loaded, request, source)
    tok = loaded.tokenizer
    assert isinstance(tok, RemiTokenizer) and request.track is not None
    first, last = request.infill_span() if request.infill is not None else (0, len(enc.bar_starts) - 1)
    model = loaded.sampler(request.num_samples)[0]
    prompt, budget = track_prompt(tok, enc, voice, first, last, model.config.max_seq_len)
    around = sum(t == tok.bar_id for t in prompt)
    meters = bar_meters(tok, enc, first, last)
    grammar = RemiGrammar(
        tok,
        max_bars=around + len(meters),
        max_bar_tokens=MAX_BAR_TOKENS,
        max_new_tokens=budget,
        end_token="FillEnd",
        bar_time_signatures=[None] * around + meters,
        programs={tok.program_ids[voice]},
    )
    end = tok.fill_ids["FillEnd"]
    seed = request.drawn_seed()
    start = time.perf_counter()
    gen = torch.Generator(device=loaded.device).manual_seed(seed)
    out = decode_remi(loaded, request, prompt, budget, gen, grammar, stop_at_eos(end))
    elapsed = time.perf_counter() - start
    index, index_source = originality_of(loaded, originality)
    params = {**_params(loaded, request, seed, [], last - first + 1), "track": request.track}
    songs = []
    for i, seq in enumerate(out.sequences()):
        middle = [t for t in seq[len(prompt) :] if t not in (end, tok.pad_id)]
        made = tok.decode(middle)
        score = replace_track_bars(source, request.track - 1, made, first, last)
        check = judge_originality(made, index, index_source)
        songs.append(
            GeneratedSong(
                score, [*prompt, *middle], loaded.name, {**params, "sample": i}, elapsed, len(middle), check
            )
        )
    if progress is not None:
        progress(1.0)
    return songs
