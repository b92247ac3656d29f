"""Sampling a trained `MuseGAN`: phrases chained into pieces, latent interpolation, and accompaniment.

* Pieces longer than one phrase (4 bars) are chained phrases that share the static latents (the inter-track
  ``z`` and each track's ``z_k``: what a piece "is") and draw new temporal latents per phrase, so the
  music moves on while the instruments keep their character.
* `interpolate_latents` walks on the sphere between two latent sets (slerp per part): the phrases in between
  morph from one sample to the other; `morph_piece` plays such a walk as one piece.
* `accompany` is track-conditional generation without retraining: for each phrase of the user's music it
  searches the latents (Adam on a soft F1 between the generator's given tracks and the user's, plus a
  Gaussian prior) so the generated band fits the given part, then puts the user's part back exactly.
  (The paper trains an encoder per conditioning track instead; a latent search serves any track of any model.)

Rolls here are bool or uint8 ``[tracks, bars, steps, pitches]``; `PianoRollTokenizer.decode` writes them as
multi-track scores with each track's program.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import symusic
import torch
from torch import Tensor

from museforge.families.musegan.model import Latents, MuseGAN, binarize
from museforge.tokenizers.pianoroll import PianoRollConfig, PianoRollTokenizer, TrackSpec

BinarizeMode = Literal["threshold", "bernoulli"]


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation along the last dimension (linear where a and b are parallel)."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.acos((an * bn).sum(-1, keepdim=True).clamp(-1.0, 1.0))  # [..., 1]
    so = torch.sin(omega)
    lerp = (1.0 - t) * a + t * b
    sl = (torch.sin((1.0 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp(min=1e-8)
    return torch.where(so.abs() < 1e-6, lerp, sl)


def interpolate_latents(a: Latents, b: Latents, steps: int) -> Latents:
    """``steps`` latent sets from ``a`` to ``b`` (both ends included) for each pair of phrases: batch
    ``[B]`` in, ``[steps · B]`` out, ordered step-major."""
    if steps < 2:
        raise ValueError(f"interpolation needs steps >= 2, got {steps}")
    ts = [i / (steps - 1) for i in range(steps)]
    parts = zip(
        (a.shared, a.shared_temporal, a.track, a.track_temporal),
        (b.shared, b.shared_temporal, b.track, b.track_temporal),
        strict=True,
    )
    out = [torch.cat([slerp(x, y, t) for t in ts]) for x, y in parts]
    return Latents(*out)


def _genre_tensor(model: MuseGAN, genre: int | None, batch: int) -> Tensor | None:
    c = model.config
    if not c.n_genres:
        if genre is not None:
            raise ValueError("this MuseGAN has no genres")
        return None
    if genre is None:
        raise ValueError(f"choose a genre: {', '.join(c.genres)}")
    if not 0 <= genre < c.n_genres:
        raise ValueError(f"genre index {genre} outside 0..{c.n_genres - 1}")
    return torch.full((batch,), genre, dtype=torch.long, device=next(model.parameters()).device)


@torch.no_grad()
def render_latents(
    model: MuseGAN,
    latents: Latents,
    genre: int | None = None,
    mode: BinarizeMode = "threshold",
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """Binary phrases bool [B, K, N, S, P] for latents (model in eval mode: batch norm's running statistics)."""
    was = model.training
    model.eval()
    out = model(latents, _genre_tensor(model, genre, latents.batch_size))
    model.train(was)
    return binarize(out, mode, generator).cpu().numpy()


def chain_latents(model: MuseGAN, n_phrases: int, generator: torch.Generator | None = None) -> Latents:
    """Latents of ``n_phrases`` consecutive phrases of one piece: shared static parts, new temporal parts."""
    fresh = model.sample_latents(n_phrases, generator)
    first = model.sample_latents(1, generator)
    return Latents(
        first.shared.expand_as(fresh.shared),
        fresh.shared_temporal,
        first.track.expand_as(fresh.track),
        fresh.track_temporal,
    )


def phrases_to_piece(phrases: np.ndarray, bars: int) -> np.ndarray:
    """Consecutive phrases [n, K, N, S, P] as one roll [K, bars, S, P] (the last phrase cut to fit)."""
    k = phrases.shape[1]
    joined = phrases.transpose(1, 0, 2, 3, 4).reshape(k, -1, *phrases.shape[3:])  # [K, n·N, S, P]
    if bars > joined.shape[1]:
        raise ValueError(f"{phrases.shape[0]} phrases hold {joined.shape[1]} bars, fewer than {bars}")
    return joined[:, :bars]


def generate_piece(
    model: MuseGAN,
    bars: int,
    genre: int | None = None,
    mode: BinarizeMode = "threshold",
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """A piece of ``bars`` bars, bool [K, bars, S, P], as chained phrases (see the module docstring)."""
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    n = math.ceil(bars / model.config.n_bars)
    phrases = render_latents(model, chain_latents(model, n, generator), genre, mode, generator)
    return phrases_to_piece(phrases, bars)


def morph_piece(
    model: MuseGAN,
    steps: int,
    genre: int | None = None,
    mode: BinarizeMode = "threshold",
    generator: torch.Generator | None = None,
) -> np.ndarray:
    """A piece of ``steps`` phrases, bool [K, steps · N, S, P], walking from one sampled phrase to another:
    phrase i is rendered from `interpolate_latents` at i / (steps - 1), so the music turns gradually from the
    first phrase into the last."""
    path = interpolate_latents(model.sample_latents(1, generator), model.sample_latents(1, generator), steps)
    return phrases_to_piece(render_latents(model, path, genre, mode, generator), steps * model.config.n_bars)


@dataclass
class Accompaniment:
    """`accompany`'s result: the roll (given tracks exactly as given) and how well the search fit them."""

    roll: np.ndarray  # uint8 [K, bars, S, P]
    fit_f1: float  # F1 of the generator's own version of the given tracks vs the given tracks (0..1)
    losses: list[float]  # the search's objective at each step (soft F1 loss + prior)


def accompany(
    model: MuseGAN,
    given: Mapping[int, np.ndarray],
    genre: int | None = None,
    steps: int = 150,
    lr: float = 0.05,
    prior: float = 1e-3,
    mode: BinarizeMode = "threshold",
    generator: torch.Generator | None = None,
) -> Accompaniment:
    """Generate the other tracks around ``given`` ({track index: roll [bars, S, P]}, all the same length).

    Each phrase's latents start at a random draw and follow Adam on a soft-F1 (Dice) loss between the
    generator's given tracks and the user's — overlap, not cell accuracy, so a sparse part is fitted neither by
    silence nor by filling every cell — plus ``prior`` · ‖z‖²; the weights never change.
    """
    c = model.config
    if not given:
        raise ValueError("accompany needs at least one given track")
    if len(given) >= c.n_tracks:
        raise ValueError(f"all {c.n_tracks} tracks are given: nothing left to generate")
    bad = [k for k in given if not 0 <= k < c.n_tracks]
    if bad:
        raise ValueError(f"track indices {bad} outside 0..{c.n_tracks - 1}")
    shapes = {np.asarray(r).shape for r in given.values()}
    if (
        len(shapes) != 1
        or len(next(iter(shapes))) != 3
        or next(iter(shapes))[1:] != (c.steps_per_bar, c.n_pitches)
    ):
        raise ValueError(
            f"given rolls must share one shape [bars, {c.steps_per_bar}, {c.n_pitches}], got {shapes}"
        )
    bars = next(iter(shapes))[0]
    n = math.ceil(bars / c.n_bars)
    pad = n * c.n_bars - bars
    dev = next(model.parameters()).device
    tracks = sorted(given)
    target = np.stack([np.pad(np.asarray(given[k]) > 0, ((0, pad), (0, 0), (0, 0))) for k in tracks])
    target_t = torch.as_tensor(target, dtype=torch.float32, device=dev)  # [G, n·N, S, P]
    target_t = target_t.unflatten(1, (n, c.n_bars)).transpose(0, 1)  # [n, G, N, S, P]
    genre_t = _genre_tensor(model, genre, n)

    latents = chain_latents(model, n, generator)
    params = [
        p.clone().requires_grad_(True)
        for p in (latents.shared, latents.shared_temporal, latents.track, latents.track_temporal)
    ]
    opt = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    was = model.training
    model.eval()
    try:
        for _ in range(steps):
            out = model(Latents(*params), genre_t)[:, tracks]  # [n, G, N, S, P]
            p = (out + 1.0) / 2.0  # sounding probability
            dice = 1.0 - 2.0 * (p * target_t).sum() / (p.sum() + target_t.sum()).clamp(min=1.0)
            loss = dice + prior * sum((q**2).mean() for q in params)
            losses.append(loss.item())
            grads = torch.autograd.grad(loss, params)
            for q, g in zip(params, grads, strict=True):
                q.grad = g
            opt.step()
        with torch.no_grad():
            final = model(Latents(*params), genre_t)  # [n, K, N, S, P]
    finally:
        model.train(was)
    roll = phrases_to_piece(binarize(final, mode, generator).cpu().numpy(), bars).astype(np.uint8)  # [K, ...]
    own = roll[tracks] > 0
    want = target[:, :bars]
    hits = float((own & want).sum())
    f1 = 2 * hits / max(float(own.sum() + want.sum()), 1.0)
    for k in tracks:
        roll[k] = np.asarray(given[k])
    return Accompaniment(roll, f1, losses)


def parse_track_map(spec: str | Mapping[str, int], track_names: list[str]) -> dict[int, int]:
    """``"piano:0,bass:2"`` (model track name : the user's score track index) as {model track: score track}."""
    pairs = (
        spec.items() if isinstance(spec, Mapping) else [p.split(":") for p in spec.split(",") if p.strip()]
    )
    lower = [t.lower() for t in track_names]
    out: dict[int, int] = {}
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(
                f"tracks are given as name:index pairs, e.g. {track_names[0].lower()}:0; got {pair!r}"
            )
        name, index = str(pair[0]).strip().lower(), str(pair[1]).strip()
        if name not in lower:
            raise ValueError(f"unknown track {name!r}; this model's tracks: {', '.join(track_names)}")
        if not index.isdigit():
            raise ValueError(f"track index must be a number, got {index!r}")
        out[lower.index(name)] = int(index)
    if not out:
        raise ValueError("no tracks given")
    return out


def given_rolls(
    score: symusic.Score,
    tokenizer: PianoRollTokenizer,
    track_map: Mapping[int, int],
    max_bars: int | None = None,
) -> dict[int, np.ndarray]:
    """The user's score tracks as rolls for the model tracks they stand for: {model track: uint8 [bars, S, P]}."""
    rolls = {}
    for model_track, score_track in track_map.items():
        if not 0 <= score_track < len(score.tracks):
            raise ValueError(f"the score has tracks 0..{len(score.tracks) - 1}, not {score_track}")
        single = symusic.Score(score.tpq)
        single.tracks.append(score.tracks[score_track].copy())
        one = PianoRollTokenizer(_one_track(tokenizer)).encode(single)[0]  # [bars, S, P]
        if not one.any():
            raise ValueError(f"score track {score_track} has no notes in the model's pitch range")
        rolls[model_track] = one
    bars = max(r.shape[0] for r in rolls.values())
    if max_bars is not None:
        bars = min(bars, max_bars)
    return {k: np.pad(r, ((0, max(0, bars - r.shape[0])), (0, 0), (0, 0)))[:bars] for k, r in rolls.items()}


def _one_track(tokenizer: PianoRollTokenizer) -> PianoRollConfig:
    """The tokenizer's grid with a single track taking any part."""
    return replace(tokenizer.config, tracks=(TrackSpec("given", ((0, 127),)),), assign="order")


def accompaniment_score(
    roll: np.ndarray,
    score: symusic.Score,
    tokenizer: PianoRollTokenizer,
    track_map: Mapping[int, int],
    tempo: float = 120.0,
) -> symusic.Score:
    """The accompaniment roll [K, bars, S, P] as a score in the user's ticks, each given model track replaced by
    the user's own track (its notes, program and name untouched) up to the end of the last bar."""
    out = tokenizer.decode(roll, tempo=tempo, tpq=score.tpq)
    end = roll.shape[1] * tokenizer.config.quarters_per_bar * score.tpq
    for model_track, score_track in track_map.items():
        track = score.tracks[score_track].copy()
        track.notes = track.notes.filter(lambda n, end=end: n.time < end)
        out.tracks[model_track] = track
    return out
