"""Sampling a MuseGAN: chained phrases of a genre, a latent walk between two phrases, or an accompaniment of the
user's tracks (see `museforge.families.musegan.generate`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import symusic
import torch

from museforge.families.base import ProgressFn
from museforge.families.loaded import GeneratedSong, LoadedModel, judge_originality, originality_of
from museforge.families.musegan.generate import (
    accompaniment_score,
    accompany,
    generate_piece,
    given_rolls,
    morph_piece,
    parse_track_map,
)
from museforge.families.musegan.model import MuseGAN
from museforge.families.musegan.request import DEFAULT_BARS, MuseGANRequest
from museforge.metrics.originality import OriginalityIndex
from museforge.tokenizers.pianoroll import PianoRollTokenizer


def _genre_id(loaded: LoadedModel, genre: str | None) -> int | None:
    config = loaded.checkpoint.model.config
    if genre is not None:
        return config.genre_index(genre)
    if config.n_genres > 1:
        raise ValueError(f"model {loaded.name} needs a genre: {', '.join(config.genres)}")
    return 0 if config.n_genres else None


def _rolls(
    loaded: LoadedModel,
    request: MuseGANRequest,
    source: symusic.Score | None,
    gen: torch.Generator,
    progress: ProgressFn | None,
) -> tuple[list[symusic.Score], dict[int, int] | None, list[float]]:
    """The scores, the kept tracks (model track -> the piece's track) and each accompaniment's fit."""
    model, tok = loaded.checkpoint.model, loaded.tokenizer
    assert isinstance(model, MuseGAN) and isinstance(tok, PianoRollTokenizer)
    genre = _genre_id(loaded, request.style)
    given_map, rolls, scores, fits = None, None, [], []
    if source is not None:
        if request.tracks is None:
            raise ValueError("accompaniment needs both the music and its tracks, e.g. tracks='piano:0'")
        given_map = parse_track_map(request.tracks, [t.name for t in tok.config.tracks])
        rolls = given_rolls(source, tok, given_map, max_bars=request.bars)
    for i in range(request.num_samples):
        if source is not None and given_map is not None:
            result = accompany(model, rolls, genre, mode=request.binarize, generator=gen)
            tempo = float(source.tempos[0].qpm) if len(source.tempos) else 120.0
            scores.append(accompaniment_score(result.roll, source, tok, given_map, tempo=tempo))
            fits.append(result.fit_f1)
        elif request.walk is not None:
            scores.append(tok.decode(morph_piece(model, request.walk, genre, request.binarize, gen)))
        else:
            scores.append(
                tok.decode(generate_piece(model, request.bars or DEFAULT_BARS, genre, request.binarize, gen))
            )
        if progress is not None:
            progress((i + 1) / request.num_samples)
    return scores, given_map, fits


def sample_musegan(
    loaded: LoadedModel,
    request: MuseGANRequest,
    source: symusic.Score | None,
    progress: ProgressFn | None,
    originality: OriginalityIndex | str | Path | None,
) -> list[GeneratedSong]:
    """``request.num_samples`` pieces; with a ``source``, accompaniments of its ``request.tracks``."""
    if request.walk is not None and (request.bars is not None or source is not None):
        raise ValueError(
            f"walk sets the length ({request.walk} phrases of 4 bars): give no bars and no accompaniment with it"
        )
    index, index_source = originality_of(loaded, originality)
    seed = request.drawn_seed()
    gen = torch.Generator(device=loaded.device).manual_seed(seed)
    start = time.perf_counter()
    scores, given_map, fits = _rolls(loaded, request, source, gen, progress)
    elapsed = time.perf_counter() - start
    names = [t.name for t in loaded.tokenizer.config.tracks]
    walked = None if request.walk is None else request.walk * loaded.checkpoint.model.config.n_bars
    params: dict[str, Any] = {
        "model": loaded.name, "family": loaded.family, "style": request.style,
        "bars": request.bars or walked or (None if source is not None else DEFAULT_BARS),
        "walk": request.walk, "seed": seed, "num_samples": request.num_samples, "binarize": request.binarize,
        "accompany": None if source is None else "score",
        "tracks": None if given_map is None else {names[k]: v for k, v in given_map.items()},
    }  # fmt: skip
    songs = []
    for i, score in enumerate(scores):
        judged = score.copy()
        if given_map is not None:  # the user's own parts are not the model's to be judged
            judged.tracks = [t for k, t in enumerate(score.tracks) if k not in given_map]
        check = judge_originality(judged, index, index_source)
        extra = {"accompaniment_fit_f1": round(fits[i], 4)} if fits else {}
        songs.append(
            GeneratedSong(score, [], loaded.name, {**params, **extra, "sample": i}, elapsed, 0, check)
        )
    return songs
