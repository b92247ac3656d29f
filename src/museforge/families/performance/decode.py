"""The Performance RNN's sampling loop: LSTM state carried one event at a time, controls riding with the
inputs (Magenta's alignment), on the shared loop's hooks (`museforge.generation.decode`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from museforge.families.performance.model import CONTROL_DIM, LSTMState, PerformanceRNN
from museforge.generation.decode import (
    Generated,
    MaskFn,
    StopFn,
    _batch_prompt,
    _check_args,
    _Loop,
    make_generator,
    sampling_loop,
)

ControlFn = Callable[[int, Tensor], Tensor]


def _control_source(
    controls: Tensor | ControlFn | None, batch: int, device: torch.device
) -> Callable[[int, Tensor], Tensor | None]:
    """Normalise the accepted control forms to ``f(position, prefix) -> [B, 22] | None``."""
    if controls is None:
        return lambda position, prefix: None
    if callable(controls):
        return lambda position, prefix: controls(position, prefix).to(device).expand(batch, CONTROL_DIM)
    c = controls.to(device)
    if c.shape[-1] != CONTROL_DIM or c.dim() not in (1, 2, 3):
        raise ValueError(f"controls must be [22], [B, 22] or [B, T, 22], got shape {tuple(c.shape)}")
    if c.dim() < 3:
        fixed = c.expand(batch, CONTROL_DIM)
        return lambda position, prefix: fixed

    def per_step(position: int, prefix: Tensor) -> Tensor:
        if position >= c.shape[1]:
            raise ValueError(f"controls cover {c.shape[1]} positions; position {position} was asked for")
        return c[:, position].expand(batch, CONTROL_DIM)

    return per_step


@sampling_loop
def generate_performance(
    model: PerformanceRNN,
    prompt: Tensor | Sequence[int],
    max_new_tokens: int,
    *,
    controls: Tensor | ControlFn | None = None,
    num_samples: int = 1,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    generator: torch.Generator | None = None,
    mask_fn: MaskFn | None = None,
    stop_fn: StopFn | None = None,
    pad_id: int = 0,
) -> Generated:
    """Sample Performance-RNN events after ``prompt``, carrying the LSTM state one step at a time.

    ``controls`` (see `encode_controls`) is fixed ([22] or [B, 22]), given per position ([B, T, 22]) or
    computed by ``f(position, prefix) -> [B, 22]``. As in Magenta, the control for position p (the event
    being predicted) rides with the input event at p-1. ``None`` leaves both controls unset.
    """
    _check_args(max_new_tokens, num_samples, pad_id, model.config.vocab_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    gen = generator if generator is not None else make_generator(seed, device)
    ids = _batch_prompt(prompt, num_samples, device)  # [B, t]
    loop = _Loop(ids, max_new_tokens, gen, temperature, top_k, top_p, mask_fn, stop_fn, pad_id)
    batch, t0 = loop.ids.shape
    control_at = _control_source(controls, batch, device)

    def step_controls(first: int, count: int) -> Tensor | None:
        """Controls [B, count, 22] for the inputs at positions first..first+count-1."""
        rows = [control_at(p + 1, loop.ids) for p in range(first, first + count)]
        return None if rows[0] is None else torch.stack(rows, dim=1)

    state: LSTMState | None = None
    try:
        logits, state = model(loop.ids, step_controls(0, t0), state)  # [B, t0, V]
        for i in range(max_new_tokens):
            nxt = loop.step(logits[:, -1])
            if loop.done or i == max_new_tokens - 1:
                break
            position = loop.ids.shape[1] - 1
            logits, state = model(nxt.unsqueeze(1), step_controls(position, 1), state)  # [B, 1, V]
    finally:
        model.train(was_training)
    return loop.result()
