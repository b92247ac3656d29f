"""MuseMorphose as a tool: generate from the prior with a per-bar attribute plan, transfer a piece's bars to new
attribute classes keeping its identity, interpolate between two pieces, continue a piece. The command line and
the web application call these functions; devices come from the model.

Every function decodes through one loop (`sample_bars`): a KV-cached decoder step per token, each token
conditioned on its bar (in-attention), the REMI grammar mask on every sampled token, so the output always
decodes to valid MIDI with exactly the bars asked for. Per bar the loop can *force* a head of tokens after the
``Bar`` (the attribute tokens and the original time signature), or the bar's whole content (bars kept as they
were, e.g. the context of a continuation); forced tokens go through the decoder too, so what follows sees them.
Pieces longer than the model's ``n_bars`` are processed window by window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import symusic
import torch
from torch import Tensor

from museforge.data.formats import load_score
from museforge.defaults import DEFAULT_GUIDANCE, MAX_GUIDANCE
from museforge.families.musemorphose.model import MuseMorphose
from museforge.generation.decode import make_generator
from museforge.generation.remi_grammar import RemiGrammar
from museforge.generation.sampling import sample
from museforge.models.modules import IncrementalDecoder, KVCache
from museforge.tokenizers.remi import RemiTokenizer

ClassPlan = Sequence[tuple[int | None, int | None] | None]
# Best-of-N counts a try's miss on a class the transfer keeps this many times a miss on a moved one
# (`choose_candidate`): on 30 test pieces it cut the rhythm drift that polyphony shifts cause (the paper's
# leak, beyond the corpus's own correlation) from .065 to .040 with 4 tries per bar and from .043 to .031 with 8
# (polyphony ρ .91 -> .88 and .95 -> .92; weight 2 gave .054 with 4 tries, 6 the same as 3).
KEPT_CLASS_WEIGHT = 3.0
ProgressFn = Callable[[float], None]


@dataclass
class Guidance:
    """The classes a transfer moves from, for `sample_bars`: the reference classes ``rhythm``/``polyphony``
    [B, N] (a piece's own) with ``heads`` [B][N], the heads the reference classes would have.

    Best-of-N tries weigh a class that stays at its reference more (`choose_candidate`). With ``weight`` ≠ 0
    each token is drawn from ``l + weight · (l - l_ref)`` (contrastive guidance), where ``l`` are the next-token
    logits under the asked classes and ``l_ref`` those under the reference classes, decoded beside them from the
    same tokens. Where the asked and reference classes agree the two are equal and nothing changes; where a
    bar's class was moved, the move's effect on the distribution is amplified, as classifier-free guidance does
    for a condition (Ho & Salimans 2022), so a model that moves the measured classes in the asked direction but
    not far enough moves them further. Costs a second decoder row per row.
    """

    weight: float
    rhythm: Tensor
    polyphony: Tensor
    heads: Sequence[Sequence[Sequence[int]]]


def decoded_rows(candidates: int, guidance: float) -> int:
    """Decoder rows one transfer row samples at once: its tries per bar, each with a reference row when guided
    (what a caller sizes its precision for, as `LoadedModel.sampler` does by batch)."""
    return candidates * (2 if guidance else 1)


@dataclass
class Morphed:
    """A result: the score, its REMI tokens, and the rhythm/polyphony classes each bar was asked for."""

    score: symusic.Score
    tokens: list[int]
    rhythm: list[int]
    polyphony: list[int]

    def save_midi(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.score.dump_midi(str(path))
        return path


@dataclass
class EncodedPiece:
    """A piece as the model sees it: REMI ids, where each bar starts, bar contents, classes and latents."""

    ids: np.ndarray
    bar_starts: np.ndarray
    rhythm: np.ndarray  # [M]
    polyphony: np.ndarray  # [M]
    mu: Tensor  # [M, Z]

    @property
    def n_bars(self) -> int:
        return len(self.bar_starts)

    def bar(self, b: int) -> list[int]:
        """Tokens of bar ``b`` after its Bar token (attributes included)."""
        end = self.bar_starts[b + 1] if b + 1 < self.n_bars else len(self.ids)
        return [int(t) for t in self.ids[self.bar_starts[b] + 1 : end]]

    def head(self, bars: int) -> EncodedPiece:
        """The piece's first ``bars`` bars (an evaluation's fixed-length excerpt)."""
        k = min(bars, self.n_bars)
        end = int(self.bar_starts[k]) if k < self.n_bars else len(self.ids)
        return EncodedPiece(
            self.ids[:end], self.bar_starts[:k], self.rhythm[:k], self.polyphony[:k], self.mu[:k]
        )

    def time_signature(self, tok: RemiTokenizer, b: int) -> list[int]:
        """Bar ``b``'s TimeSig token (as a one-token list), or nothing if the bar has none."""
        return [t for t in self.bar(b)[:3] if tok.token_name(t).startswith("TimeSig_")][:1]


def _check(model: MuseMorphose, tok: RemiTokenizer) -> None:
    if not isinstance(model, MuseMorphose):
        raise ValueError(f"model must be a MuseMorphose, got {type(model).__name__}")
    if model.config.vocab_size != tok.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} tokens, the model {model.config.vocab_size}")


def scaled_progress(progress: ProgressFn | None, done: float, share: float) -> ProgressFn | None:
    """``progress`` for one part of a job (a window, a sample): the part's own fraction ``f`` is reported as
    ``done + f * share`` of the whole, so the caller sees one rising bar."""
    if progress is None:
        return None
    report = progress
    return lambda f: report(done + f * share)


def read_score(piece: str | Path | symusic.Score) -> symusic.Score:
    """A score from a file in any format the data pipeline reads, or the score itself."""
    if isinstance(piece, symusic.Score):
        return piece
    path = Path(piece)
    if not path.is_file():
        raise ValueError(f"input piece {path} does not exist")
    try:
        return load_score(path)
    except Exception as exc:  # every reader has its own errors; say which file failed
        raise ValueError(f"cannot read {path}: {type(exc).__name__}: {exc}") from exc


def encode_piece(model: MuseMorphose, tok: RemiTokenizer, piece: str | Path | symusic.Score) -> EncodedPiece:
    """Tokenize a piece (attribute classes measured per bar) and encode every bar to its posterior mean."""
    _check(model, tok)
    enc = tok.encode(read_score(piece))
    if len(enc.bar_starts) == 0:
        raise ValueError("the piece holds no notes")
    return encode_tokens(model, tok, enc.ids.tolist())


@torch.no_grad()
def encode_tokens(model: MuseMorphose, tok: RemiTokenizer, tokens: Sequence[int]) -> EncodedPiece:
    """Encode REMI tokens with attribute tokens after each Bar (as the tokenizer and the model write them),
    window by window of the model's ``n_bars``."""
    from museforge.data.musemorphose import collate_segments, make_segment  # here: it loads the cache reader

    ids = np.asarray(_content(tokens, tok), dtype=np.int64)
    starts = np.flatnonzero(ids == tok.bar_id)
    device = next(model.parameters()).device
    model.eval()
    mus, rhythm, poly = [], [], []
    n = model.config.n_bars
    for w in range(0, len(starts), n):
        s = starts[w : w + n]
        end = int(starts[w + n]) if w + n < len(starts) else len(ids)
        seg = make_segment(ids[s[0] : end], s - s[0], tok, None, model.config.max_bar_tokens)
        batch = collate_segments([seg.__dict__], tok.pad_id)
        mu, _ = model.encode(batch["bar_ids"].to(device), batch["bar_mask"].to(device))
        mus.append(mu[0])
        rhythm.append(seg.rhythm)
        poly.append(seg.polyphony)
    return EncodedPiece(ids, starts, np.concatenate(rhythm), np.concatenate(poly), torch.cat(mus))


@torch.inference_mode()  # a hundred-odd small ops per token: see `sampling_loop`
def sample_bars(
    model: MuseMorphose,
    tok: RemiTokenizer,
    z: Tensor,
    rhythm: Tensor,
    polyphony: Tensor,
    heads: Sequence[Sequence[Sequence[int]]],
    *,
    style: str | None = None,
    generator: torch.Generator | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    progress: ProgressFn | None = None,
    candidates: int = 1,
    guidance: Guidance | None = None,
) -> list[list[int]]:
    """Decode ``N`` bars per row from latents ``z`` [B, N, Z] and classes [B, N]; ``heads[r][b]`` are tokens
    forced right after bar ``b``'s Bar in row ``r`` (the rest of the bar is sampled under the REMI grammar); a
    head that holds a whole bar ends with its closer (the next Bar, or EOS after the last bar).
    ``progress(fraction of the bars done)`` is called after every token, so a caller can follow or stop it.
    ``candidates > 1`` samples every bar that many times and keeps the one whose measured classes are nearest
    the asked ones (`_sample_best_of`, weighing the classes that stay at ``guidance``'s reference more); rows are
    then decoded one after another. A ``guidance`` with a weight steers each token away from what the reference
    classes would give (see `Guidance`).

    Returns each row's tokens: ``[Style?] (Bar ...)*N`` without the final EOS.
    """
    _check(model, tok)
    c = model.config
    b, n, _ = z.shape
    if n > c.n_bars:
        raise ValueError(f"a window holds at most {c.n_bars} bars, got {n}")
    if len(heads) != b or any(len(h) != n for h in heads):
        raise ValueError(f"heads must list {n} bars for each of {b} rows")
    if candidates < 1:
        raise ValueError(f"candidates must be >= 1, got {candidates}")
    device = next(model.parameters()).device
    model.eval()
    temperature = c.temperature if temperature is None else temperature
    top_p = c.top_p if top_p is None else top_p
    gen = generator if generator is not None else make_generator(None, device)
    cond = model.conditions(z.to(device), rhythm.to(device), polyphony.to(device))  # [B, N, D]
    prompt = ([tok.style_token(style)] if style is not None else []) + [tok.bar_id]
    weight = guidance.weight if guidance is not None else 0.0
    guided = weight != 0
    guides: list[tuple[float, Tensor, Sequence[Sequence[int]]] | None] = [None] * b  # per row, for best-of-N
    own: list[tuple[list[int], list[int]] | None] = [None] * b  # per row, the reference classes per bar
    if guidance is not None:
        own = [(guidance.rhythm[r].tolist(), guidance.polyphony[r].tolist()) for r in range(b)]
        if guided:
            ref_rhythm, ref_poly = guidance.rhythm.to(device), guidance.polyphony.to(device)
            ref_cond = model.conditions(z.to(device), ref_rhythm, ref_poly)  # [B, N, D]
            guides = [(weight, ref_cond[r], guidance.heads[r]) for r in range(b)]
            if candidates == 1:  # the asked classes' rows, then their references'
                cond = torch.cat([cond, ref_cond])  # [2B, N, D]
                heads = [*heads, *guidance.heads]
    if candidates > 1:
        return [
            _sample_best_of(
                model, tok, cond[r], prompt, rhythm[r].tolist(), polyphony[r].tolist(), heads[r], candidates,
                generator=gen, temperature=temperature, top_p=top_p,
                progress=scaled_progress(progress, r / b, 1 / b), guide=guides[r], own=own[r],
            )
            for r in range(b)
        ]  # fmt: skip
    rows_total = 2 * b if guided else b
    ids = torch.tensor([prompt] * rows_total, dtype=torch.long, device=device)  # [B', t]
    bars = [1] * rows_total  # Bar tokens per row so far
    queues = [list(h[0]) for h in heads]
    finished = [False] * rows_total
    rows = torch.arange(rows_total, device=device)
    grammar, cache, step, last = _start(model, tok, ids, cond[:, 0], n)
    budget = c.max_seq_len - ids.shape[1]
    for _ in range(budget):
        if guided:  # [2B, V] -> [B, V]; a reference row takes its asked row's token
            last = last[:b] + weight * (last[:b] - last[b:])
        allowed = grammar(ids[:b])  # [B, V]
        nxt = sample(last, gen, temperature, top_p=top_p, mask=allowed)  # [B]
        if guided:
            nxt = torch.cat([nxt, nxt])  # [2B]
        for r in range(rows_total):
            if finished[r]:
                nxt[r] = tok.pad_id
            elif queues[r]:
                nxt[r] = queues[r].pop(0)
            token = int(nxt[r])
            if token == tok.bar_id and not finished[r]:
                bars[r] += 1
                if bars[r] > n:
                    nxt[r] = tok.eos_id
                    finished[r] = True
                else:
                    queues[r] = list(heads[r][bars[r] - 1])
            elif token == tok.eos_id:
                finished[r] = True
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        if progress is not None:
            done = zip(bars[:b], finished[:b], strict=True)
            progress(sum(1.0 if f else min(k - 1, n) / n for k, f in done) / b)
        if all(finished):
            break
        bar_index = torch.tensor([min(k, n) - 1 for k in bars], device=device)
        last = step(nxt, cache, cond[rows, bar_index])  # [B, V]
    else:
        raise RuntimeError("sampling ran out of decoder positions before every row ended")
    out = []
    for row in ids[:b].tolist():
        end = row.index(tok.eos_id) if tok.eos_id in row else len(row)
        out.append(row[:end])
    return out


def _start(
    model: MuseMorphose, tok: RemiTokenizer, ids: Tensor, first_cond: Tensor, n_bars: int
) -> tuple[RemiGrammar, KVCache, IncrementalDecoder, Tensor]:
    """What a decoding loop over ``n_bars`` bars starts from: the REMI grammar, the KV cache filled with the
    prompt ``ids`` [B, t] (all of it in bar 0, condition ``first_cond`` [B, D]), the one-token step, and the
    next-token logits [B, V].

    The last bar ends where the model opens another one (that Bar becomes the EOS): training segments are cut
    from longer pieces and never end in EOS, and forbidding the Bar there made the model pile notes into the
    last bar up to `max_bar_tokens`.
    """
    grammar = RemiGrammar(tok, max_bars=n_bars, max_bar_tokens=model.config.max_bar_tokens, end_with_bar=True)
    cache = model.new_cache()
    logits, cache = model.decode(ids, first_cond[:, None].expand(-1, ids.shape[1], -1), cache)
    return grammar, cache, model.incremental_decoder(), logits[:, -1]


def _sample_best_of(
    model: MuseMorphose,
    tok: RemiTokenizer,
    cond: Tensor,
    prompt: list[int],
    rhythm: Sequence[int],
    polyphony: Sequence[int],
    heads: Sequence[Sequence[int]],
    candidates: int,
    *,
    generator: torch.Generator,
    temperature: float,
    top_p: float,
    progress: ProgressFn | None,
    guide: tuple[float, Tensor, Sequence[Sequence[int]]] | None = None,
    own: tuple[Sequence[int], Sequence[int]] | None = None,
) -> list[int]:
    """One row of `sample_bars` (``cond`` [N, D], classes per bar), each bar sampled ``candidates`` times as one
    batch: a candidate that closes the bar (a Bar or EOS) waits, fed padding, until all have; then the one whose
    measured classes (`RemiTokenizer.bar_classes`) are nearest the bar's asked ones (`choose_candidate`, given
    the bars' ``own`` classes when transferring) is kept, every row of the KV cache becomes a copy of it, and the
    next bar starts from there.
    ``guide`` = (weight, reference conditions [N, D], reference heads) adds a reference row per candidate, as
    `Guidance` does for `sample_bars`.

    Why: a small model moves the measured classes in the asked direction but often not far enough (the paper's
    protocol scores exactly that); choosing among a few samples of a bar buys control with compute, not data.
    """
    n = cond.shape[0]
    device = cond.device
    c = candidates
    copies = 2 if guide is not None else 1  # the candidates' rows, then (guided) their reference rows
    conds = [cond] if guide is None else [cond, guide[1]]  # each [N, D]
    row_heads = [heads] * c + ([guide[2]] * c if guide is not None else [])

    def bar_cond(bar: int) -> Tensor:  # [copies·C, D]
        return torch.cat([x[bar].expand(c, -1) for x in conds])

    ids = torch.tensor([prompt] * (copies * c), dtype=torch.long, device=device)  # [copies·C, t]
    grammar, cache, step, last = _start(model, tok, ids, bar_cond(0), n)
    bar = 0
    queues = [list(h[0]) for h in row_heads]
    closed: dict[int, tuple[int, int]] = {}  # candidate -> (its tokens before the closer, the closer)
    while True:
        if cache.length >= cache.max_len:
            raise RuntimeError("sampling ran out of decoder positions before the last bar ended")
        if guide is not None:  # [2C, V] -> [C, V]
            last = last[:c] + guide[0] * (last[:c] - last[c:])
        nxt = sample(last, generator, temperature, top_p=top_p, mask=grammar(ids[:c])).repeat(copies)
        for r in range(copies * c):
            if r % c not in closed:
                if queues[r]:
                    nxt[r] = queues[r].pop(0)
                if r < c and int(nxt[r]) in (tok.bar_id, tok.eos_id):
                    closed[r] = (ids.shape[1], int(nxt[r]))
            if r % c in closed:
                nxt[r] = tok.pad_id
        if len(closed) < c:
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            if progress is not None:  # every token, as `sample_bars` promises, so a caller can stop it
                progress(bar / n)
        else:
            rows = [ids[r, : closed[r][0]].tolist() for r in range(c)]
            choice = 0
            if any(row != rows[0] for row in rows):
                measured = [tok.bar_classes(tok.decode(row), bar + 1) for row in rows]
                choice = choose_candidate(
                    [(r[bar], p[bar]) for r, p in measured],
                    (rhythm[bar], polyphony[bar]),
                    None if own is None else (own[0][bar], own[1][bar]),
                )
            length, closer = closed[choice]
            bar += 1
            if progress is not None:
                progress(bar / n)
            if bar == n or closer == tok.eos_id:
                return rows[choice]
            sources = [k * c + choice for k in range(copies) for _ in range(c)]
            cache.keep_rows(sources, length)
            nxt = torch.full((copies * c,), closer, dtype=torch.long, device=device)
            ids = torch.cat([ids[sources, :length], nxt[:, None]], dim=1)
            grammar.restart()
            queues = [list(h[bar]) for h in row_heads]
            closed = {}
        last = step(nxt, cache, bar_cond(bar))  # [copies·C, V]


def choose_candidate(
    measured: Sequence[tuple[int, int]], asked: tuple[int, int], own: tuple[int, int] | None = None
) -> int:
    """Index of the try whose measured (rhythm, polyphony) classes are nearest the ``asked`` ones: L1 over the two
    classes, where, given the bar's ``own`` classes, a miss on a class asked to stay at its own counts
    `KEPT_CLASS_WEIGHT` times; the first try on a tie.

    Why: a transfer that moves one attribute should leave the other where it was (the paper scores its drift
    as the leak), and a small model drags it along: a try that keeps it beats one that lands the moved class
    nearer by fewer than `KEPT_CLASS_WEIGHT` classes.
    """
    if not measured:
        raise ValueError("measured is empty: choose among at least one try")
    stays = (False, False) if own is None else (asked[0] == own[0], asked[1] == own[1])
    weights = [KEPT_CLASS_WEIGHT if s else 1.0 for s in stays]
    distance = [sum(w * abs(m - a) for w, m, a in zip(weights, got, asked, strict=True)) for got in measured]
    return distance.index(min(distance))


def _content(tokens: Sequence[int], tok: RemiTokenizer) -> list[int]:
    """Tokens from the first Bar on (a window's style token dropped)."""
    tokens = list(tokens)
    return tokens[tokens.index(tok.bar_id) :] if tok.bar_id in tokens else []


def _finish(
    tok: RemiTokenizer, tokens: list[int], rhythm: Sequence[int], poly: Sequence[int], style: str | None
) -> Morphed:
    full = ([tok.style_token(style)] if style is not None else []) + tokens
    return Morphed(tok.decode(full), full, [int(x) for x in rhythm], [int(x) for x in poly])


def _class_tensor(values: Sequence[int], device: torch.device) -> Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.int64), device=device)[None]


def _latent_noise(shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> Tensor:
    return torch.randn(shape, generator=gen, device=gen.device).to(device)


def _resolve_plan(model: MuseMorphose, plan: ClassPlan | None, bars: int) -> tuple[list[int], list[int]]:
    """A full per-bar plan: open entries take the previous bar's class (the model's default at first)."""
    plan = list(plan or [])
    if len(plan) > bars:
        raise ValueError(f"attribute plan covers {len(plan)} bars but only {bars} are generated")
    r, p = model.config.default_rhythm, model.config.default_polyphony
    rhythm, poly = [], []
    for b in range(bars):
        entry = plan[b] if b < len(plan) else None
        if entry is not None:
            for label, k in zip(("rhythm", "polyphony"), entry, strict=True):
                if k is not None and not 0 <= int(k) < model.config.n_attr_classes:
                    raise ValueError(f"bar {b}: {label} class must be in 0..7, got {k}")
            r = r if entry[0] is None else int(entry[0])
            p = p if entry[1] is None else int(entry[1])
        rhythm.append(r)
        poly.append(p)
    return rhythm, poly


def _extend(
    model: MuseMorphose,
    tok: RemiTokenizer,
    context: EncodedPiece | None,
    rhythm: list[int],
    poly: list[int],
    gen: torch.Generator,
    style: str | None,
    sampling: dict[str, float | int | None],
    progress: ProgressFn | None = None,
) -> list[int]:
    """New bars (classes ``rhythm``/``poly``, latents from the prior) after ``context``'s bars, window by
    window: each window repeats the last half-window of bars so far, forced as they were, as its context."""
    c = model.config
    device = next(model.parameters()).device
    out: list[int] = []
    done = 0
    keep = 0 if context is None else min(context.n_bars, c.n_bars // 2 if c.n_bars > 1 else 0)
    piece = context
    while done < len(rhythm):
        new = min(len(rhythm) - done, c.n_bars - keep)
        if new < 1:
            raise ValueError("the model's window is too short to continue")
        heads: list[list[int]] = []
        ctx_mu = torch.zeros(0, c.d_latent, device=device)
        ctx_r: list[int] = []
        ctx_p: list[int] = []
        if keep and piece is not None:
            first = piece.n_bars - keep
            heads = [[*piece.bar(b), tok.bar_id] for b in range(first, piece.n_bars)]
            ctx_mu = piece.mu[first:].to(device)
            ctx_r = piece.rhythm[first:].tolist()
            ctx_p = piece.polyphony[first:].tolist()
        r_new, p_new = rhythm[done : done + new], poly[done : done + new]
        heads += [tok.attribute_tokens(a, b) for a, b in zip(r_new, p_new, strict=True)]
        z = torch.cat([ctx_mu, _latent_noise((new, c.d_latent), gen, device)])[None]
        tokens = sample_bars(
            model, tok, z, _class_tensor(ctx_r + r_new, device), _class_tensor(ctx_p + p_new, device),
            [heads], style=style, generator=gen,
            progress=scaled_progress(progress, done / len(rhythm), new / len(rhythm)), **sampling,
        )[0]  # fmt: skip
        bars_tokens = _content(tokens, tok)
        starts = [i for i, t in enumerate(bars_tokens) if t == tok.bar_id]
        fresh = bars_tokens[starts[keep] :] if keep else bars_tokens
        out += fresh
        done += new
        # the next window's context: the bars written so far, encoded
        so_far = ([] if context is None else context.ids[context.bar_starts[0] :].tolist()) + out
        piece = encode_tokens(model, tok, so_far)
        keep = min(piece.n_bars, c.n_bars // 2)
    return out


def generate(
    model: MuseMorphose,
    tok: RemiTokenizer,
    *,
    bars: int = 16,
    plan: ClassPlan | None = None,
    style: str | None = None,
    num_samples: int = 1,
    seed: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    candidates: int = 1,
    progress: ProgressFn | None = None,
) -> list[Morphed]:
    """New music from the prior: ``bars`` bars with per-bar ``(rhythm, polyphony)`` classes from ``plan``
    (an open entry or class repeats the previous bar's), led by ``style``; ``progress`` and ``candidates`` as in
    `sample_bars`."""
    if bars < 1 or num_samples < 1:
        raise ValueError(f"bars and num_samples must be >= 1, got {bars} and {num_samples}")
    _check(model, tok)
    rhythm, poly = _resolve_plan(model, plan, bars)
    gen = make_generator(seed, next(model.parameters()).device)
    sampling = {"temperature": temperature, "top_p": top_p, "candidates": candidates}
    songs = []
    for i in range(num_samples):
        part = scaled_progress(progress, i / num_samples, 1 / num_samples)
        tokens = _extend(model, tok, None, rhythm, poly, gen, style, sampling, part)
        songs.append(_finish(tok, tokens, rhythm, poly, style))
    return songs


def continue_piece(
    model: MuseMorphose,
    tok: RemiTokenizer,
    piece: str | Path | symusic.Score,
    *,
    bars: int = 8,
    plan: ClassPlan | None = None,
    style: str | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    candidates: int = 1,
    progress: ProgressFn | None = None,
) -> Morphed:
    """The piece followed by ``bars`` new bars: its last bars (encoded, kept as they are) are the context; new
    bars' classes come from ``plan``, or repeat the piece's last bar's; ``progress`` as in `sample_bars`."""
    if bars < 1:
        raise ValueError(f"bars must be >= 1, got {bars}")
    encoded = encode_piece(model, tok, piece)
    last = (int(encoded.rhythm[-1]), int(encoded.polyphony[-1]))
    rhythm, poly = _resolve_plan(model, [last, *(plan or [])][: bars + 1], bars + 1)
    rhythm, poly = rhythm[1:], poly[1:]
    gen = make_generator(seed, next(model.parameters()).device)
    sampling = {"temperature": temperature, "top_p": top_p, "candidates": candidates}
    new = _extend(model, tok, encoded, rhythm, poly, gen, style, sampling, progress)
    original = encoded.ids[encoded.bar_starts[0] :].tolist()
    return _finish(
        tok, original + new, [*encoded.rhythm.tolist(), *rhythm], [*encoded.polyphony.tolist(), *poly], style
    )


def shifted_classes(
    classes: np.ndarray, shift: int | Sequence[int | None] | None, selected: Sequence[int], n_classes: int = 8
) -> np.ndarray:
    """Classes with ``shift`` added on the ``selected`` bars (clipped to 0..n-1); a sequence gives explicit
    classes for the selected bars instead, in order (``None`` keeps that bar's own class)."""
    out = np.asarray(classes, dtype=np.int64).copy()
    if shift is None:
        return out
    if isinstance(shift, int):
        out[list(selected)] = np.clip(out[list(selected)] + shift, 0, n_classes - 1)
        return out
    values = list(shift)
    if len(values) != len(selected):
        raise ValueError(f"{len(values)} explicit classes for {len(selected)} selected bars")
    for b, k in zip(selected, values, strict=True):
        if k is None:
            continue
        if not 0 <= int(k) < n_classes:
            raise ValueError(f"bar {b}: class must be in 0..{n_classes - 1}, got {k}")
        out[b] = int(k)
    return out


def transfer(
    model: MuseMorphose,
    tok: RemiTokenizer,
    piece: str | Path | symusic.Score,
    *,
    rhythm: int | Sequence[int | None] | None = None,
    polyphony: int | Sequence[int | None] | None = None,
    bars: Sequence[int] | None = None,
    keep_other_bars: bool = True,
    style: str | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    candidates: int = 1,
    guidance: float = DEFAULT_GUIDANCE,
    progress: ProgressFn | None = None,
) -> Morphed:
    """Re-generate a piece with its bars' attribute classes shifted (an int, e.g. +2) or set (one class per
    selected bar, ``None`` keeping the bar's own), keeping its identity: every bar is decoded from its own
    latent and time signature.

    ``bars`` selects bars (0-based; default all); with ``keep_other_bars`` the others stay exactly as they were.
    ``progress(fraction of the piece's bars done)`` is called after every token, and ``candidates`` samples per
    bar are weighed against the asked classes (both as in `sample_bars`). ``guidance`` amplifies the change of
    classes against the piece's own (`Guidance`; 0 samples from the model alone).
    """
    return transfer_parts(
        model, tok, [read_score(piece)], rhythm=rhythm, polyphony=polyphony, bars=bars,
        keep_other_bars=keep_other_bars, style=style, seed=seed, temperature=temperature, top_p=top_p,
        candidates=candidates, guidance=guidance, progress=progress,
    )[0]  # fmt: skip


def transfer_parts(
    model: MuseMorphose,
    tok: RemiTokenizer,
    parts: Sequence[symusic.Score],
    *,
    rhythm: int | Sequence[int | None] | None = None,
    polyphony: int | Sequence[int | None] | None = None,
    bars: Sequence[int] | None = None,
    keep_other_bars: bool = True,
    style: str | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    candidates: int = 1,
    guidance: float = DEFAULT_GUIDANCE,
    progress: ProgressFn | None = None,
) -> list[Morphed]:
    """`transfer` of several pieces of the same number of bars (the parts of one piece) at once: each is decoded
    from its own latents and classes, one decoder row per part, so four parts cost about one."""
    encoded = [encode_piece(model, tok, part) for part in parts]
    m = encoded[0].n_bars
    if any(e.n_bars != m for e in encoded):
        raise ValueError(f"parts must have the same number of bars, got {[e.n_bars for e in encoded]}")
    selected = list(range(m)) if bars is None else sorted(set(int(b) for b in bars))
    bad = [b for b in selected if not 0 <= b < m]
    if bad:
        raise ValueError(f"bars {bad} are outside the piece's bars 0..{m - 1}")
    n_cls = model.config.n_attr_classes
    classes = [
        (
            shifted_classes(e.rhythm, rhythm, selected, n_cls),
            shifted_classes(e.polyphony, polyphony, selected, n_cls),
        )
        for e in encoded
    ]
    gen = make_generator(seed, next(model.parameters()).device)
    rows = transfer_rows(
        model, tok, encoded, classes, selected, keep_other_bars=keep_other_bars, style=style,
        generator=gen, temperature=temperature, top_p=top_p, progress=progress, candidates=candidates,
        guidance=guidance,
    )  # fmt: skip
    return [_finish(tok, tokens, r, p, style) for tokens, (r, p) in zip(rows, classes, strict=True)]


def transfer_rows(
    model: MuseMorphose,
    tok: RemiTokenizer,
    encoded: EncodedPiece | Sequence[EncodedPiece],
    classes: Sequence[tuple[np.ndarray, np.ndarray]],
    selected: Sequence[int],
    *,
    keep_other_bars: bool = True,
    style: str | None = None,
    generator: torch.Generator | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    candidates: int = 1,
    progress: ProgressFn | None = None,
    guidance: float = 0.0,
) -> list[list[int]]:
    """Bar tokens of one transfer per ``(rhythm, polyphony)`` class row (each [M]) of ``encoded`` (one piece for
    every row, or one per row, all of M bars), decoded as one batch per window, so several variants of a piece
    (e.g. an evaluation's shifts) or several parts cost about one; ``progress`` as in `transfer`. ``guidance``
    > 0 amplifies the change from each row's own classes (`Guidance` with them as the reference)."""
    if not 0 <= guidance <= MAX_GUIDANCE:
        raise ValueError(f"guidance must be in 0..{MAX_GUIDANCE}, got {guidance}")
    pieces = [encoded] * len(classes) if isinstance(encoded, EncodedPiece) else list(encoded)
    chosen = set(int(b) for b in selected)
    device = next(model.parameters()).device
    m, n = pieces[0].n_bars, model.config.n_bars
    outs: list[list[int]] = [[] for _ in classes]
    for w in range(0, m, n):
        window = range(w, min(w + n, m))
        heads = [
            _transfer_heads(tok, e, r, p, window, chosen, keep_other_bars)
            for e, (r, p) in zip(pieces, classes, strict=True)
        ]
        z = torch.stack([e.mu[w : window.stop] for e in pieces]).to(device)  # [B, N, Z]
        guide = Guidance(
            guidance,
            torch.as_tensor(np.stack([e.rhythm[w : window.stop] for e in pieces]), device=device),
            torch.as_tensor(np.stack([e.polyphony[w : window.stop] for e in pieces]), device=device),
            [_transfer_heads(tok, e, e.rhythm, e.polyphony, window, chosen, keep_other_bars) for e in pieces],
        )
        rows = sample_bars(
            model, tok, z,
            torch.as_tensor(np.stack([r[w : window.stop] for r, _ in classes]), device=device),
            torch.as_tensor(np.stack([p[w : window.stop] for _, p in classes]), device=device),
            heads, style=style, generator=generator, temperature=temperature, top_p=top_p,
            progress=scaled_progress(progress, w / m, len(window) / m), candidates=candidates, guidance=guide,
        )  # fmt: skip
        for out, row in zip(outs, rows, strict=True):
            out += _content(row, tok)
    return outs


def _transfer_heads(
    tok: RemiTokenizer,
    encoded: EncodedPiece,
    rhythm: np.ndarray,
    polyphony: np.ndarray,
    window: range,
    chosen: set[int],
    keep_other_bars: bool,
) -> list[list[int]]:
    """Forced heads of a window's bars: a kept bar whole (with its closer), a re-generated one its classes'
    attribute tokens and the bar's time signature."""
    return [
        [*encoded.bar(b), tok.bar_id if b + 1 < window.stop else tok.eos_id]
        if keep_other_bars and b not in chosen
        else [*tok.attribute_tokens(int(rhythm[b]), int(polyphony[b])), *encoded.time_signature(tok, b)]
        for b in window
    ]


def slerp(a: Tensor, b: Tensor, t: float) -> Tensor:
    """Spherical interpolation per row of ``a``, ``b`` [..., Z] (linear where they are nearly parallel)."""
    an, bn = (
        a / a.norm(dim=-1, keepdim=True).clamp(min=1e-8),
        b / b.norm(dim=-1, keepdim=True).clamp(min=1e-8),
    )
    omega = (an * bn).sum(-1, keepdim=True).clamp(-1.0, 1.0).acos()  # [..., 1]
    so = omega.sin()
    lerp = (1 - t) * a + t * b
    sl = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / so.clamp(min=1e-8)
    return torch.where(so.abs() < 1e-4, lerp, sl)


def interpolate(
    model: MuseMorphose,
    tok: RemiTokenizer,
    a: str | Path | symusic.Score,
    b: str | Path | symusic.Score,
    *,
    steps: int = 5,
    method: str = "slerp",
    style: str | None = None,
    seed: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    candidates: int = 1,
) -> list[Morphed]:
    """``steps`` pieces from ``a`` to ``b`` (both ends included): per bar, latents interpolated (``slerp`` or
    ``lerp``) and classes interpolated and rounded, over the bars both pieces have (at most one window)."""
    if steps < 2:
        raise ValueError(f"steps must be >= 2 (both ends are included), got {steps}")
    if method not in ("slerp", "lerp"):
        raise ValueError(f"method must be 'slerp' or 'lerp', got {method!r}")
    ea, eb = encode_piece(model, tok, a), encode_piece(model, tok, b)
    n = min(ea.n_bars, eb.n_bars, model.config.n_bars)
    device = next(model.parameters()).device
    gen = make_generator(seed, device)
    ts = [i / (steps - 1) for i in range(steps)]
    z = torch.stack(
        [
            slerp(ea.mu[:n], eb.mu[:n], t) if method == "slerp" else (1 - t) * ea.mu[:n] + t * eb.mu[:n]
            for t in ts
        ]
    )  # [S, N, Z]
    rhythm = [np.rint((1 - t) * ea.rhythm[:n] + t * eb.rhythm[:n]).astype(np.int64) for t in ts]
    poly = [np.rint((1 - t) * ea.polyphony[:n] + t * eb.polyphony[:n]).astype(np.int64) for t in ts]
    heads = [
        [
            [*tok.attribute_tokens(r[k], p[k]), *(ea if t < 0.5 else eb).time_signature(tok, k)]
            for k in range(n)
        ]
        for r, p, t in zip(rhythm, poly, ts, strict=True)
    ]
    rows = sample_bars(
        model, tok, z, torch.as_tensor(np.stack(rhythm)), torch.as_tensor(np.stack(poly)), heads,
        style=style, generator=gen, temperature=temperature, top_p=top_p, candidates=candidates,
    )  # fmt: skip
    return [
        _finish(tok, _content(row, tok), r, p, style) for row, r, p in zip(rows, rhythm, poly, strict=True)
    ]
