"""Sampling a MuseMorphose: bars from the prior with the per-bar plan as the decoder's attribute classes, led by
the style; a primer is encoded and continued; a re-style re-plays a piece's bars with shifted or new classes
(`museforge.families.musemorphose.decode`)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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
from museforge.families.musemorphose.decode import (
    Morphed,
    continue_piece,
    decoded_rows,
    scaled_progress,
    transfer,
    transfer_parts,
)
from museforge.families.musemorphose.decode import generate as prior_generate
from museforge.families.musemorphose.model import MuseMorphose
from museforge.families.musemorphose.request import PARTS, MuseMorphoseRequest, restyled_bars
from museforge.generation.output import transpose
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


def solo(source: symusic.Score, track: symusic.Track) -> symusic.Score:
    """``track`` alone, with ``source``'s tempo map, time and key signatures (so its bars are the piece's)."""
    out = symusic.Score(source.tpq)
    out.tempos = source.tempos.copy()
    out.time_signatures = source.time_signatures.copy()
    out.key_signatures = source.key_signatures.copy()
    out.tracks.append(track.copy())
    return out


def one_track(score: symusic.Score, like: symusic.Track) -> symusic.Track:
    """Every note of ``score`` as one track with ``like``'s name, program and drum flag. A note still sounding
    when its pitch is struck again ends there: one MIDI channel cannot hold both, and readers would pair the
    note-offs wrongly (a kept note tied into a re-played bar would otherwise swallow the new note)."""
    notes = sorted(
        ([n.time, n.duration, n.pitch, n.velocity] for t in score.tracks for n in t.notes),
        key=lambda n: n[:1] + n[2:3],
    )
    sounding: dict[int, list[int]] = {}
    for note in notes:  # [time, duration, pitch, velocity]
        held = sounding.get(note[2])
        if held is not None and held[0] + held[1] > note[0]:
            held[1] = max(1, note[0] - held[0])
        sounding[note[2]] = note
    out = symusic.Track(like.name, like.program, like.is_drum)
    out.notes.extend(symusic.Note(*n) for n in notes)
    return out


@dataclass
class Replayed:
    """One transfer of a piece: the result with the piece's own notes in the kept bars, and what was re-played."""

    score: symusic.Score
    morphed: Morphed
    chosen: list[int]  # the re-played bars, 0-based
    new: list[int]  # their tokens
    part: str  # the track it re-played
    octaves: int = 0  # how far its re-played bars were moved into the part's register


def replayed(
    tok: RemiTokenizer, piece: symusic.Score, morphed: Morphed, bars: Sequence[int] | None, keep_other_bars: bool,
    label: str, register: symusic.Track | None = None,
) -> Replayed:  # fmt: skip
    """A transfer of ``piece``'s ``bars`` (default all) put back among its kept bars; with ``register`` (a part
    re-played alone), its re-played bars moved by whole octaves into that track's register (`register_shift`)."""
    n_bars = len(morphed.rhythm)
    chosen = list(range(n_bars)) if bars is None or not keep_other_bars else sorted(set(bars))
    bar_at = [j for j, t in enumerate(morphed.tokens) if t == tok.bar_id] + [len(morphed.tokens)]
    new = [t for b in chosen for t in morphed.tokens[bar_at[b] : bar_at[b + 1]]]
    octaves = 0 if register is None else register_shift(register, tok.decode(new))
    made = transpose(morphed.score, 12 * octaves) if octaves else morphed.score
    score = keep_source_bars(piece, made, set(range(n_bars)) - set(chosen), label)
    return Replayed(score, morphed, chosen, new, label, octaves)


def register_shift(track: symusic.Track, made: symusic.Score) -> int:
    """Whole octaves that put ``made``'s notes in ``track``'s register (their median pitches nearest): a bar's
    latent holds its line and rhythm more surely than its octave, so a bass re-played alone can come back two
    octaves up; moving the whole line by octaves keeps every interval the model wrote."""
    pitches = [n.pitch for t in made.tracks for n in t.notes]
    if not pitches or not len(track.notes):
        return 0
    own = float(np.median(track.notes.numpy()["pitch"]))
    return round((own - float(np.median(pitches))) / 12)


def replay_parts(
    net: MuseMorphose, tok: RemiTokenizer, piece: symusic.Score, bars: Sequence[int] | None, keep_other_bars: bool,
    progress: ProgressFn | None, **options: Any,
) -> tuple[symusic.Score, list[Replayed]]:  # fmt: skip
    """Each pitched part of ``piece`` re-played from its own latents (parts of as many bars in one batch, a
    decoder row each) and put back as its own track (name, program); drum tracks and parts that hold none of
    the asked bars stay as they are."""
    alone = {i: solo(piece, t) for i, t in enumerate(piece.tracks) if not t.is_drum and len(t.notes)}
    groups: dict[int, list[int]] = {}
    for i, part in alone.items():
        groups.setdefault(len(tok.encode(part).bar_starts), []).append(i)
    tracks = {i: t.copy() for i, t in enumerate(piece.tracks)}
    done: list[Replayed] = []
    for k, (n_bars, members) in enumerate(groups.items()):
        own = None if bars is None else [b for b in bars if b < n_bars]
        if own == []:
            continue
        step = scaled_progress(progress, k / len(groups), 1 / len(groups))
        morphed = transfer_parts(
            net, tok, [alone[i] for i in members], bars=own, keep_other_bars=keep_other_bars, progress=step,
            **options,
        )  # fmt: skip
        for i, result in zip(members, morphed, strict=True):
            track = piece.tracks[i]
            done.append(replayed(tok, alone[i], result, own, keep_other_bars, track.name, register=track))
            tracks[i] = one_track(done[-1].score, track)
    out = symusic.Score(piece.tpq)
    out.tempos, out.time_signatures = piece.tempos.copy(), piece.time_signatures.copy()
    out.key_signatures = piece.key_signatures.copy()
    out.tracks.extend(tracks.values())
    return out, done


def restyle_song(
    loaded: LoadedModel,
    piece: str | Path | symusic.Score,
    *,
    rhythm: int | Sequence[int | None] | None = None,
    polyphony: int | Sequence[int | None] | None = None,
    bars: Sequence[int] | None = None,
    keep_other_bars: bool = True,
    parts: str = "each",
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
    seeded ``seed + i`` (see `museforge.families.musemorphose.decode.transfer`; no seed: a new one, recorded).

    A piece of several parts is re-played part by part with ``parts="each"`` (each keeps its track, instrument
    and register, as its latents hold that line alone), or merged into one track first with ``"together"``.
    The originality check judges only the re-played bars when the others are kept: those are the user's own music.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if parts not in PARTS:
        raise ValueError(f"parts must be one of {PARTS}, got {parts!r}")
    seed = secrets.randbelow(MAX_SEED) if seed is None else seed
    rows = decoded_rows(candidates, guidance)
    (net, _), tok = loaded.sampler(rows), loaded.tokenizer
    if not isinstance(net, MuseMorphose) or not isinstance(tok, RemiTokenizer):
        raise ValueError(f"model {loaded.name} ({loaded.family}) cannot re-style: use a MuseMorphose")
    source = read_piece(piece, "piece")
    pitched = sum(1 for t in source.tracks if not t.is_drum and len(t.notes))
    each = parts == "each" and pitched > 1
    index, index_source = originality_of(loaded, originality_index)
    options = {"rhythm": rhythm, "polyphony": polyphony, "style": style, "temperature": temperature,
               "top_p": top_p, "candidates": candidates, "guidance": guidance}  # fmt: skip
    songs = []
    for i in range(num_samples):
        start = time.perf_counter()
        step = None if progress is None else scaled_progress(progress, i / num_samples, 1 / num_samples)
        if each:
            score, done = replay_parts(
                net, tok, source, bars, keep_other_bars, step, seed=seed + i, **options
            )
        else:
            morphed = transfer(net, tok, source, bars=bars, keep_other_bars=keep_other_bars, seed=seed + i,
                               progress=step, **options)  # fmt: skip
            one = replayed(tok, source, morphed, bars, keep_other_bars, f"{loaded.name} re-styled")
            score, done = one.score, [one]
        elapsed = time.perf_counter() - start
        check = judge_originality(replayed_music(tok, done), index, index_source)
        params = {
            "model": loaded.name, "family": loaded.family, "style": style, "seed": seed, "sample": i,
            "candidates": candidates, "guidance": guidance, **loaded.precision_params(rows),
            "source_bars": max(len(r.morphed.rhythm) for r in done), "parts": "each" if each else "together",
            "restyled_bars": sorted({int(b) for r in done for b in r.chosen}), **asked_classes(done, each),
        }  # fmt: skip
        tokens = [t for r in done for t in r.morphed.tokens]
        songs.append(
            GeneratedSong(score, tokens, loaded.name, params, elapsed, sum(len(r.new) for r in done), check)
        )
    if progress is not None:
        progress(1.0)
    return songs


def asked_classes(done: Sequence[Replayed], each: bool) -> dict[str, Any]:
    """The classes each bar was asked for: ``attributes`` [[rhythm, polyphony], ...] of the piece, or, re-played
    part by part, ``part_attributes`` [{"part": track name, "attributes": ...}, ...]."""

    def pairs(morphed: Morphed) -> list[list[int]]:
        return [[int(r), int(p)] for r, p in zip(morphed.rhythm, morphed.polyphony, strict=True)]

    if not each:
        return {"attributes": pairs(done[0].morphed)}
    return {
        "part_attributes": [
            {"part": r.part, "attributes": pairs(r.morphed), "octaves": r.octaves} for r in done
        ]
    }


def replayed_music(tok: RemiTokenizer, done: Sequence[Replayed]) -> symusic.Score:
    """The re-played bars of every part, decoded into one score (what the originality check judges)."""
    out = tok.decode(done[0].new)
    for replayed in done[1:]:
        out.tracks.extend(tok.decode(replayed.new).tracks)
    return out


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
        loaded, source, **changes, bars=selected, parts=request.parts, style=request.style, seed=request.drawn_seed(),
        temperature=request.temperature, top_p=request.top_p, num_samples=request.num_samples,
        candidates=request.candidates, guidance=request.guidance if request.guidance is not None else DEFAULT_GUIDANCE,
        progress=progress, originality_index=originality,
    )  # fmt: skip
