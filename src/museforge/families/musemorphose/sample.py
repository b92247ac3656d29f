"""Sampling a MuseMorphose: bars from the prior with the per-bar plan as the decoder's attribute classes, led by
the style; a primer is encoded and continued; a re-style re-plays a piece's bars with shifted or new classes
(`museforge.families.musemorphose.decode`)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import symusic

from museforge.defaults import DEFAULT_GUIDANCE
from museforge.families.base import MAX_SEED, ProgressFn
from museforge.families.fields import plan_of
from museforge.families.loaded import (
    GeneratedSong,
    LoadedModel,
    attribute_list,
    judge_originality,
    originality_of,
    read_piece,
)
from museforge.families.musemorphose.decode import continue_piece, decoded_rows, scaled_progress, transfer
from museforge.families.musemorphose.decode import generate as prior_generate
from museforge.families.musemorphose.model import MuseMorphose
from museforge.families.musemorphose.request import MuseMorphoseRequest, restyled_bars
from museforge.generation.splice import keep_source_bars
from museforge.metrics.originality import OriginalityIndex
from museforge.tokenizers.remi import RemiTokenizer


def _bars(
    loaded: LoadedModel,
    request: MuseMorphoseRequest,
    primer: symusic.Score | None,
    plan: list[tuple[int | None, int | None] | None],
    seed: int,
    progress: ProgressFn | None,
) -> tuple[list[list[int]], list[symusic.Score], list[int]]:
    """Tokens, scores and where each song's new music starts (token index); songs are sampled one at a time,
    each as a batch of ``candidates`` rows."""
    model, tok = loaded.sampler(request.candidates)[0], loaded.tokenizer
    assert isinstance(model, MuseMorphose) and isinstance(tok, RemiTokenizer)
    bars, n = request.bars, request.num_samples
    sampling = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "style": request.style,
        "candidates": request.candidates,
    }
    if primer is None:
        songs = prior_generate(
            model, tok, bars=bars, plan=plan, num_samples=n, seed=seed, progress=progress, **sampling
        )
        return [s.tokens for s in songs], [s.score for s in songs], [0] * len(songs)
    enc = tok.encode(primer)
    if len(enc.bar_starts) == 0:
        raise ValueError("the primer holds no notes to continue")
    kept_primer = primer
    if request.primer_bars is not None and request.primer_bars < len(enc.bar_starts):
        kept_primer = tok.decode(enc.ids[: enc.bar_starts[request.primer_bars]])
    tokens, scores, starts = [], [], []
    for i in range(n):
        part = scaled_progress(progress, i / n, 1 / n)
        song = continue_piece(
            model, tok, kept_primer, bars=bars, plan=plan, seed=seed + i, progress=part, **sampling
        )
        kept = len(song.rhythm) - bars  # the primer's bars come first, unchanged
        bar_at = [k for k, t in enumerate(song.tokens) if t == tok.bar_id]
        tokens.append(song.tokens)
        scores.append(keep_source_bars(primer, song.score, range(kept), f"{loaded.name} continuation"))
        starts.append(bar_at[kept] if kept < len(bar_at) else len(song.tokens))
    return tokens, scores, starts


def sample_musemorphose(
    loaded: LoadedModel,
    request: MuseMorphoseRequest,
    primer: symusic.Score | None,
    progress: ProgressFn | None,
    originality: OriginalityIndex | str | Path | None,
) -> list[GeneratedSong]:
    """``request.num_samples`` songs of ``request.bars`` new bars from the prior, or continuing ``primer``."""
    if request.style is not None:
        loaded.tokenizer.style_token(request.style)  # an unknown style fails here, listing the known ones
    plan = attribute_list(plan_of(request.rhythm, request.polyphony), request.bars)
    seed = request.drawn_seed()
    index, index_source = originality_of(loaded, originality)
    start = time.perf_counter()
    tokens, scores, new_at = _bars(loaded, request, primer, plan, seed, progress)
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress(1.0)
    params = {
        "model": loaded.name, "family": loaded.family, "style": request.style, "bars": request.bars,
        "temperature": request.temperature, "top_p": request.top_p, "seed": seed, "num_samples": request.num_samples,
        "candidates": request.candidates, **loaded.precision_params(request.candidates),
        "primer": None if primer is None else "score", "primer_bars": request.primer_bars,
        "attributes": [None if a is None else list(a) for a in plan] or None,
    }  # fmt: skip
    songs = []
    for i, (ids, score, k) in enumerate(zip(tokens, scores, new_at, strict=True)):
        judged = score if primer is None else loaded.tokenizer.decode(ids[k:])
        check = judge_originality(judged, index, index_source)
        songs.append(
            GeneratedSong(score, ids, loaded.name, {**params, "sample": i}, elapsed, len(ids) - k, check)
        )
    return songs


def restyle_song(
    loaded: LoadedModel,
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
) -> list[GeneratedSong]:
    """Re-style ``piece``: sample i re-plays the chosen ``bars`` (0-based, default all) from their own latents with
    ``rhythm``/``polyphony`` shifted (an int) or set (one class per chosen bar, ``None`` keeping a bar's own), each
    bar the nearest to its asked classes of ``candidates`` tries, the change of classes amplified by ``guidance``,
    seeded ``seed + i`` (see `museforge.families.musemorphose.decode.transfer`; no seed: a new one, recorded). The
    originality check judges only the re-played bars when the others are kept: those are the user's own music.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    seed = secrets.randbelow(MAX_SEED) if seed is None else seed
    rows = decoded_rows(candidates, guidance)
    (net, _), tok = loaded.sampler(rows), loaded.tokenizer
    if not isinstance(net, MuseMorphose) or not isinstance(tok, RemiTokenizer):
        raise ValueError(f"model {loaded.name} ({loaded.family}) cannot re-style: use a MuseMorphose")
    source = read_piece(piece, "piece")
    index, index_source = originality_of(loaded, originality_index)
    songs = []
    for i in range(num_samples):
        start = time.perf_counter()
        morphed = transfer(
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
        check = judge_originality(tok.decode(new), index, index_source)
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


def restyle_request(
    loaded: LoadedModel,
    request: MuseMorphoseRequest,
    source: symusic.Score,
    progress: ProgressFn | None,
    originality: OriginalityIndex | str | Path | None,
) -> list[GeneratedSong]:
    """A restyle request's bars and classes (a shift, or classes for the first re-styled bars) for `restyle_song`."""
    n_bars = len(loaded.tokenizer.encode(source).bar_starts)
    selected = restyled_bars(request.restyle_bars, n_bars)
    changes: dict[str, Any] = {}
    for attr in ("rhythm", "polyphony"):
        classes = getattr(request, attr)
        changes[attr] = (
            getattr(request, f"{attr}_shift")
            if classes is None
            else [*classes, *[None] * (len(selected) - len(classes))]
        )
    return restyle_song(
        loaded, source, **changes, bars=selected, style=request.style, seed=request.drawn_seed(),
        temperature=request.temperature, top_p=request.top_p, num_samples=request.num_samples,
        candidates=request.candidates, guidance=request.guidance if request.guidance is not None else DEFAULT_GUIDANCE,
        progress=progress, originality_index=originality,
    )  # fmt: skip
