"""Performance RNN (Oore et al. 2018; Magenta): an LSTM over performance events with optional controls.

Every input step is the event's embedding concatenated with two control signals, as in Magenta's
``optional_multiconditioned_performance_with_dynamics`` config:

* note density: a one-hot over 8 classes (bin edges 1, 2, 4, 8, 16, 32, 64 notes per second, over the next
  3 s) plus an "unset" flag;
* pitch-class histogram: 12 weights (over the next 5 s) plus an "unset" flag.

An unset control is all zeros with its flag at 1, a value the model learns during training (where controls are
dropped at random), so the user may fix density, pitch classes, both or neither when sampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from museforge.defaults import DENSITY_BINS, N_DENSITY_CLASSES
from museforge.models.config import ModelConfig

DENSITY_DIM = N_DENSITY_CLASSES + 1  # one-hot + unset flag
HISTOGRAM_DIM = 12 + 1  # pitch classes + unset flag
CONTROL_DIM = DENSITY_DIM + HISTOGRAM_DIM  # 22
DENSITY_WINDOW_S = 3.0
HISTOGRAM_WINDOW_S = 5.0
HISTOGRAM_PRIOR = 0.01  # added to each pitch-class count so an empty window gives a uniform histogram

LSTMState = tuple[Tensor, Tensor]  # (h, c), each [layers, B, hidden]


@dataclass
class PerformanceRNNConfig(ModelConfig):
    """Sizes of `PerformanceRNN`; defaults are Magenta's (3 × 512 LSTM, 388 events)."""

    model_name: ClassVar[str] = "performance_rnn"

    vocab_size: int = 388
    embed_dim: int = 256
    hidden_size: int = 512
    n_layers: int = 3
    dropout: float = 0.0
    use_controls: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "embed_dim", "hidden_size", "n_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def density_class(notes_per_second: float) -> int:
    """Magenta's note-density class: the number of bin edges at or below the density (0..7)."""
    if notes_per_second < 0:
        raise ValueError(f"notes_per_second must be >= 0, got {notes_per_second}")
    return int(np.searchsorted(DENSITY_BINS, notes_per_second, side="right"))


def encode_controls(density: Tensor | int | None, histogram: Tensor | Sequence[float] | None) -> Tensor:
    """Control vectors [..., 22] from density classes [...] and pitch-class weights [..., 12].

    ``None`` (or a density class of -1, or a histogram row of NaNs) means unset for that control. A histogram
    is normalised to sum to 1 so callers may pass raw counts or a wish like "only C, E, G".
    """
    dens = torch.as_tensor(-1 if density is None else density, dtype=torch.long)
    hist = None if histogram is None else torch.as_tensor(histogram, dtype=torch.float32)
    if hist is not None and hist.shape[-1] != 12:
        raise ValueError(
            f"histogram must have 12 pitch classes in its last dimension, got {tuple(hist.shape)}"
        )
    if ((dens < -1) | (dens >= N_DENSITY_CLASSES)).any():
        raise ValueError(f"density classes must be in -1..{N_DENSITY_CLASSES - 1}")
    batch = torch.broadcast_shapes(dens.shape, hist.shape[:-1] if hist is not None else ())
    dens = dens.expand(batch)
    out = torch.zeros(*batch, CONTROL_DIM)
    dens_unset = dens < 0
    out[..., :N_DENSITY_CLASSES] = nn.functional.one_hot(dens.clamp(min=0), N_DENSITY_CLASSES).float()
    out[..., :N_DENSITY_CLASSES] *= (~dens_unset).unsqueeze(-1)
    out[..., N_DENSITY_CLASSES] = dens_unset.float()
    if hist is None:
        out[..., -1] = 1.0
        return out
    hist = hist.expand(*batch, 12)
    hist_unset = hist.isnan().any(-1)
    if (hist[~hist_unset] < 0).any():
        raise ValueError("histogram weights must be >= 0")
    total = hist.nan_to_num(0.0).sum(-1, keepdim=True)
    if ((total <= 0).squeeze(-1) & ~hist_unset).any():
        raise ValueError("a set histogram needs a positive total weight")
    out[..., DENSITY_DIM : DENSITY_DIM + 12] = torch.where(
        hist_unset.unsqueeze(-1), 0.0, hist.nan_to_num(0.0) / total.clamp(min=1e-12)
    )
    out[..., -1] = hist_unset.float()
    return out


def performance_controls(
    step_times: np.ndarray,
    onset_pitches: np.ndarray,
    density_window: float = DENSITY_WINDOW_S,
    histogram_window: float = HISTOGRAM_WINDOW_S,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-step training controls from an event sequence, looking ahead as Magenta does.

    ``step_times`` [T]: the time in seconds at each event (non-decreasing); ``onset_pitches`` [T]: the MIDI
    pitch of a note-on event, -1 for other events. Returns density classes [T] (int) and pitch-class
    histograms [T, 12] (sum 1) over the windows that start at each step's time.
    """
    times = np.asarray(step_times, dtype=np.float64)
    pitches = np.asarray(onset_pitches, dtype=np.int64)
    if times.shape != pitches.shape or times.ndim != 1:
        raise ValueError(
            f"step_times {times.shape} and onset_pitches {pitches.shape} must be equal 1-D shapes"
        )
    if np.any(np.diff(times) < 0):
        raise ValueError("step_times must be non-decreasing")
    is_on = pitches >= 0
    on_times = times[is_on]  # [N]
    pc_cum = np.zeros((len(on_times) + 1, 12))
    pc_cum[1:] = np.cumsum(np.eye(12)[pitches[is_on] % 12], axis=0)  # [N+1, 12]
    lo = np.searchsorted(on_times, times, side="left")  # [T]
    hi_density = np.searchsorted(on_times, times + density_window, side="left")
    hi_hist = np.searchsorted(on_times, times + histogram_window, side="left")
    densities = (hi_density - lo) / density_window
    classes = np.searchsorted(DENSITY_BINS, densities, side="right").astype(np.int64)  # [T]
    counts = pc_cum[hi_hist] - pc_cum[lo] + HISTOGRAM_PRIOR  # [T, 12]
    return classes, counts / counts.sum(-1, keepdims=True)


def controls_for_events(step_times: np.ndarray, onset_pitches: np.ndarray) -> Tensor:
    """Magenta's control vectors [T, 22] of an event sequence: `performance_controls` then `encode_controls`.

    A performance tokenizer gives the inputs: ``controls_for_events(tok.event_times(ids), tok.onset_pitches(ids))``.
    """
    classes, hist = performance_controls(step_times, onset_pitches)
    return encode_controls(torch.as_tensor(classes), torch.as_tensor(hist))


def unset_at_random(controls: Tensor, p: float, generator: torch.Generator | None = None) -> Tensor:
    """Training-time control dropout: each control of a sequence ``controls`` [..., T, 22] is unset with
    probability ``p`` (for all its steps), so the model learns what "unset" means and a user may leave either
    control free when sampling."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    out = controls.clone()
    drop = torch.rand(*controls.shape[:-2], 2, generator=generator) < p  # [..., 2]: density, histogram
    dens = drop[..., 0, None, None]  # broadcast over [T, 1]
    hist = drop[..., 1, None, None]
    out[..., :DENSITY_DIM] = torch.where(
        dens, encode_controls(None, None)[:DENSITY_DIM], out[..., :DENSITY_DIM]
    )
    out[..., DENSITY_DIM:] = torch.where(
        hist, encode_controls(None, None)[DENSITY_DIM:], out[..., DENSITY_DIM:]
    )
    return out


class PerformanceRNN(nn.Module):
    """``forward(input_ids [B, T], controls [B, T, 22] | None, state) -> (logits [B, T, V], state)``."""

    config_class = PerformanceRNNConfig

    def __init__(self, config: PerformanceRNNConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        in_dim = c.embed_dim + (CONTROL_DIM if c.use_controls else 0)
        self.lstm = nn.LSTM(
            in_dim,
            c.hidden_size,
            num_layers=c.n_layers,
            batch_first=True,
            dropout=c.dropout if c.n_layers > 1 else 0.0,
        )
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size, c.vocab_size)

    def forward(
        self, input_ids: Tensor, controls: Tensor | None = None, state: LSTMState | None = None
    ) -> tuple[Tensor, LSTMState]:
        """Controls for each input step; ``None`` means both controls unset. Passing the returned ``state``
        back continues the sequence, which is how sampling runs one step at a time."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
        b, t = input_ids.shape
        x = self.embed(input_ids)  # [B, T, E]
        if self.config.use_controls:
            if controls is None:
                controls = encode_controls(None, None).to(x.device).expand(b, t, CONTROL_DIM)
            elif controls.shape != (b, t, CONTROL_DIM):
                raise ValueError(
                    f"controls must have shape {(b, t, CONTROL_DIM)}, got {tuple(controls.shape)}"
                )
            x = torch.cat([x, controls.to(x.dtype)], dim=-1)  # [B, T, E + 22]
        elif controls is not None:
            raise ValueError("this model was built with use_controls=False; pass controls=None")
        if t == 1 and not self.training:  # a sampling step
            out, new_state = self._step(x[:, 0], state)  # [B, 1, hidden]
        else:
            out, new_state = self.lstm(x, state)  # [B, T, hidden]
        logits = self.head(self.drop(out))  # [B, T, V]
        return logits, new_state

    def _step(self, x: Tensor, state: LSTMState | None) -> tuple[Tensor, LSTMState]:
        """``self.lstm`` on one time step ``x`` [B, in], layer by layer with ``torch.lstm_cell``: the same numbers
        (to float rounding) about ten times faster on a CPU, where the fused LSTM sets up a oneDNN primitive on
        every call, which at one step per call is nearly all of its time."""
        n, hidden = self.config.n_layers, self.config.hidden_size
        if state is None:
            zeros = x.new_zeros(n, x.shape[0], hidden)
            state = (zeros, zeros)
        h, c = state  # each [L, B, hidden]
        hs, cs = [], []
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(self.lstm.all_weights):
            hk, ck = torch.lstm_cell(x, (h[k], c[k]), w_ih, w_hh, b_ih, b_hh)  # each [B, hidden]
            hs.append(hk)
            cs.append(ck)
            x = hk
        return x.unsqueeze(1), (torch.stack(hs), torch.stack(cs))
