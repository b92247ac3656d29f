"""The autoregressive sampling loop every token model shares, and the loop of a decoder-only Transformer with
its KV cache. A family with another decoder (the Performance RNN's LSTM) writes its loop on `_Loop`.

Every loop takes the same hooks, so grammars and stop rules are written once:

* ``mask_fn(prefix [B, t]) -> allowed bool [B, V] or [V]`` — which tokens may come next (e.g. the REMI
  grammar); rows of finished sequences are ignored;
* ``stop_fn(sequences [B, t]) -> finished bool [B]`` — called after every step (e.g. "16 bars written").

Sequences that finish early are padded with ``pad_id``; `Generated.sequences()` trims them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol

import torch
from torch import Tensor

from museforge.generation.sampling import sample
from museforge.models.modules import IncrementalDecoder, KVCache

MaskFn = Callable[[Tensor], Tensor]
StopFn = Callable[[Tensor], Tensor]
P = ParamSpec("P")


class CachedLM(Protocol):
    """A decoder-only Transformer as `generate_transformer` drives it."""

    config: Any  # has max_seq_len and vocab_size
    training: bool

    def __call__(self, ids: Tensor, *, use_cache: bool = False) -> tuple[Tensor, KVCache | None]: ...
    def incremental_decoder(self) -> IncrementalDecoder: ...
    def parameters(self) -> Any: ...
    def eval(self) -> Any: ...
    def train(self, mode: bool = True) -> Any: ...


@dataclass
class Generated:
    """Sampled token ids [B, T] (prompt included) and each row's length before padding [B]."""

    tokens: Tensor
    lengths: Tensor

    def sequences(self) -> list[list[int]]:
        """One list of ids per sample, without the padding after its end."""
        return [row[:n].tolist() for row, n in zip(self.tokens, self.lengths.tolist(), strict=True)]


def sampling_loop(loop: Callable[P, Generated]) -> Callable[P, Generated]:
    """Run a sampling loop under ``torch.inference_mode``, and hand back ordinary tensors.

    At batch 1 a step is a hundred-odd small ops, and inference mode drops the autograd bookkeeping that
    ``no_grad`` still does per op (version counters, views' autograd metadata): about a sixth less time per
    token on one CPU core. Its tensors refuse in-place changes outside the mode, so the result is cloned out.
    """

    @functools.wraps(loop)
    def run(*args: P.args, **kwargs: P.kwargs) -> Generated:
        with torch.inference_mode():
            out = loop(*args, **kwargs)
        return Generated(tokens=out.tokens.clone(), lengths=out.lengths.clone())

    return run


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator on ``device``; a fixed seed makes sampling reproducible, ``None`` draws a fresh one."""
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def _batch_prompt(prompt: Tensor | Sequence[int], num_samples: int, device: torch.device) -> Tensor:
    ids = torch.as_tensor(prompt, dtype=torch.long, device=device)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0).expand(num_samples, -1)
    elif ids.dim() != 2:
        raise ValueError(f"prompt must be [time] or [batch, time], got shape {tuple(ids.shape)}")
    if ids.shape[1] == 0:
        raise ValueError("prompt must hold at least one token (e.g. a start-of-sequence token)")
    return ids.contiguous()


def _check_args(max_new_tokens: int, num_samples: int, pad_id: int, vocab_size: int) -> None:
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not 0 <= pad_id < vocab_size:
        # finished rows keep being fed to the model (the batch runs on), so the pad must be a real token
        raise ValueError(f"pad_id must be a token id in 0..{vocab_size - 1}, got {pad_id}")


class _Loop:
    """Bookkeeping shared by both loops: masking, sampling, finishing and padding.

    Tokens go into a buffer allocated once for the whole budget (a column write per step, not a ``torch.cat``
    that copies the prefix), and without a ``stop_fn`` no row can finish, so the per-row finishing ops are left
    out: at batch 1 every small tensor op shows in the time per token.
    """

    def __init__(
        self,
        ids: Tensor,
        max_new_tokens: int,
        generator: torch.Generator,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        mask_fn: MaskFn | None,
        stop_fn: StopFn | None,
        pad_id: int,
    ) -> None:
        b, t = ids.shape  # ids: [B, t]
        self.tokens = ids.new_empty(b, t + max_new_tokens)  # [B, t + N]; columns from self.t on are unwritten
        self.tokens[:, :t] = ids
        self.t = t
        self.gen, self.temperature, self.top_k, self.top_p = generator, temperature, top_k, top_p
        self.mask_fn, self.stop_fn, self.pad_id = mask_fn, stop_fn, pad_id
        self.finished = torch.zeros(b, dtype=torch.bool, device=ids.device)  # [B]
        self.ends = torch.zeros(b, dtype=torch.long, device=ids.device)  # [B] length of each finished row

    @property
    def ids(self) -> Tensor:
        """The tokens so far [B, t]."""
        return self.tokens[:, : self.t]

    def step(self, logits: Tensor) -> Tensor:
        """Sample the next token [B] from ``logits`` [B, V], append it, update which rows are done."""
        mask = self.allowed(logits.device)
        nxt = sample(logits, self.gen, self.temperature, self.top_k, self.top_p, mask)  # [B]
        return self.push(nxt)

    def allowed(self, device: torch.device) -> Tensor | None:
        """The mask of the next token [B, V] or [V] (None: no ``mask_fn``); finished rows may take anything."""
        if self.mask_fn is None:
            return None
        mask = self.mask_fn(self.ids).to(device)
        if self.stop_fn is not None and bool(self.finished.any()):
            mask = mask.expand(len(self.finished), -1) | self.finished.unsqueeze(-1)
        return mask

    def push(self, nxt: Tensor) -> Tensor:
        """Append the sampled tokens ``nxt`` [B] (a finished row gets the pad), update which rows are done, and
        return what was appended."""
        if self.stop_fn is not None:
            nxt = nxt.masked_fill(self.finished, self.pad_id)
        self.tokens[:, self.t] = nxt
        self.t += 1
        if self.stop_fn is not None:
            stopped = self.stop_fn(self.ids).to(self.finished.device) & ~self.finished  # [B] finished now
            self.ends.masked_fill_(stopped, self.t)
            self.finished |= stopped
        return nxt

    @property
    def done(self) -> bool:
        return self.stop_fn is not None and bool(self.finished.all())

    def result(self) -> Generated:
        # a copy when the budget was not used up, so the result does not keep the whole buffer alive
        tokens = self.tokens if self.t == self.tokens.shape[1] else self.ids.clone()
        return Generated(tokens=tokens, lengths=torch.where(self.finished, self.ends, self.t))


@sampling_loop
def generate_transformer(
    model: CachedLM,
    prompt: Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    mask_fn: MaskFn | None = None,
    stop_fn: StopFn | None = None,
    pad_id: int = 0,
    use_cache: bool = True,
) -> Generated:
    """Sample up to ``max_new_tokens`` after ``prompt`` ([T] repeated ``num_samples`` times, or [B, T]).

    With ``use_cache`` each step feeds one token and reuses the keys/values of the past. Once the sequence
    reaches the model's ``max_seq_len`` the context slides: the cache is rebuilt from the last half window
    (rotary positions are relative, so the model sees a normal prefix); without the cache every step
    re-reads the last ``max_seq_len`` tokens.
    """
    _check_args(max_new_tokens, num_samples, pad_id, model.config.vocab_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    window = model.config.max_seq_len
    gen = generator if generator is not None else make_generator(seed, device)
    ids = _batch_prompt(prompt, num_samples, device)  # [B, t]
    loop = _Loop(ids, max_new_tokens, gen, temperature, top_k, top_p, mask_fn, stop_fn, pad_id)
    try:
        if use_cache:
            step = model.incremental_decoder()
            logits, cache = model(loop.ids[:, -window:], use_cache=True)  # [B, t, V]
            last = logits[:, -1]  # [B, V]
            for i in range(max_new_tokens):
                nxt = loop.step(last)
                if loop.done or i == max_new_tokens - 1:
                    break
                if cache.length + 1 > window:
                    logits, cache = model(loop.ids[:, -(window // 2) :], use_cache=True)
                    last = logits[:, -1]
                else:
                    last = step(nxt, cache)
        else:
            for _ in range(max_new_tokens):
                logits, _ = model(loop.ids[:, -window:])  # [B, t, V]
                loop.step(logits[:, -1])
                if loop.done:
                    break
    finally:
        model.train(was_training)
    return loop.result()
