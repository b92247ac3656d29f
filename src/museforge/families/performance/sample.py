"""Sampling a Performance RNN: the length is counted in seconds of TIME_SHIFT events (the shift that crosses the
end is cut to end there), and Magenta's density / pitch-class controls are fed to every step."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import symusic
import torch
from torch import Tensor

from museforge.families.base import ProgressFn
from museforge.families.fields import PITCH_CLASSES
from museforge.families.loaded import (
    GeneratedSong,
    LoadedModel,
    judge_originality,
    originality_of,
    with_primer,
)
from museforge.families.performance.decode import generate_performance
from museforge.families.performance.model import PerformanceRNN, encode_controls
from museforge.families.performance.request import PerformanceRequest
from museforge.generation.decode import Generated
from museforge.metrics.originality import OriginalityIndex
from museforge.tokenizers.performance import PerformanceTokenizer

MAX_EVENTS_PER_SECOND = 400  # token budget per requested second (very dense music ~150)
MAX_EVENTS_PER_STEP = 32  # events at one instant before time must move on (a chord change of 8 voices is ~17)


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


def _sample_events(
    loaded: LoadedModel,
    gen: torch.Generator,
    request: PerformanceRequest,
    primer: symusic.Score | None,
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
    steps = max(1, round(request.seconds * tok.config.steps_per_second))
    length = PerformanceLength(tok, len(prompt), steps)

    def stop(seqs: Tensor) -> Tensor:
        if progress is not None:
            progress(min(1.0, length.elapsed(seqs).float().mean().item() / steps))
        return length.stop(seqs)

    model = loaded.checkpoint.model
    controls = request_controls(request.density, request.pitch_classes) if model.config.use_controls else None
    out = generate_performance(
        model,
        prompt,
        max(64, math.ceil(request.seconds * MAX_EVENTS_PER_SECOND)),
        controls=controls,
        num_samples=request.num_samples,
        generator=gen,
        mask_fn=length.mask,
        stop_fn=stop,
        pad_id=0,
        temperature=request.temperature,
        top_k=request.top_k,
        top_p=request.top_p,
    )
    length.cut(out)
    return out, len(prompt)


def request_controls(density: int | None, pitch_classes: list[str] | None) -> Tensor:
    """The control vector [22] of a request: its density class and its pitch classes as a histogram."""
    histogram = None if not pitch_classes else [1.0 if p in pitch_classes else 0.0 for p in PITCH_CLASSES]
    return encode_controls(density, histogram)


def sample_performance(
    loaded: LoadedModel,
    request: PerformanceRequest,
    primer: symusic.Score | None,
    progress: ProgressFn | None,
    originality: OriginalityIndex | str | Path | None,
) -> list[GeneratedSong]:
    """``request.num_samples`` songs of ``request.seconds`` new seconds, continuing ``primer`` when given."""
    index, index_source = originality_of(loaded, originality)
    seed = request.drawn_seed()
    gen = torch.Generator(device=loaded.device).manual_seed(seed)
    start = time.perf_counter()
    out, prompt_len = _sample_events(loaded, gen, request, primer, progress)
    sequences = [close_open_notes(s, loaded.tokenizer) for s in out.sequences()]
    scores = [loaded.tokenizer.decode(s) for s in sequences]
    if primer is not None:  # the primer's own parts where the song keeps it
        scores = [
            with_primer(loaded, primer, sc, ids[:prompt_len], 0)
            for sc, ids in zip(scores, sequences, strict=True)
        ]
    elapsed = time.perf_counter() - start
    if progress is not None:
        progress(1.0)
    params: dict[str, Any] = {
        "model": loaded.name, "family": loaded.family, "seconds": request.seconds,
        "temperature": request.temperature, "top_k": request.top_k, "top_p": request.top_p, "seed": seed,
        **loaded.precision_params(request.num_samples), "num_samples": request.num_samples,
        "primer": None if primer is None else "score", "density": request.density,
        "pitch_classes": request.pitch_classes,
    }  # fmt: skip
    songs = []
    for i, (ids, score) in enumerate(zip(sequences, scores, strict=True)):
        judged = score if primer is None else loaded.tokenizer.decode(ids[prompt_len:])
        check = judge_originality(judged, index, index_source)
        songs.append(
            GeneratedSong(
                score, ids, loaded.name, {**params, "sample": i}, elapsed, len(ids) - prompt_len, check
            )
        )
    return songs
