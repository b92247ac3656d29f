"""Our models as `museforge.metrics.likelihood.TokenScorer`s, so their NLL/perplexity on a split is computed
by the same code as every other model's (the n-gram baseline included)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from museforge.families.performance.model import PerformanceRNN
from museforge.families.remi.model import TransformerLM


class ModelScorer:
    """``log_probs(ids)[i] = ln p(ids[i + 1] | ids[: i + 1])`` under a museforge model.

    A Transformer sees at most ``max_seq_len`` tokens: longer sequences are scored in windows that overlap by
    half, each token by the window that gives it the longest context (the usual sliding-window perplexity).
    The Performance RNN reads the whole sequence; ``controls(ids) -> [T, 22]`` supplies its per-step controls
    (None: all unset).
    """

    def __init__(self, model: nn.Module, controls: Callable[[np.ndarray], Tensor] | None = None) -> None:
        if not isinstance(model, TransformerLM | PerformanceRNN):
            raise ValueError(f"cannot score with a {type(model).__name__}")
        self.model, self.controls = model, controls
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def log_probs(self, ids: Sequence[int]) -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64)
        if len(arr) < 2:
            return np.zeros(0)
        was_training = self.model.training
        self.model.eval()
        try:
            if isinstance(self.model, PerformanceRNN):
                return self._rnn(arr)
            return self._transformer(arr)
        finally:
            self.model.train(was_training)

    def _picked(self, logits: Tensor, targets: np.ndarray) -> np.ndarray:
        logp = torch.log_softmax(logits.float(), dim=-1)  # [T, V]
        index = torch.as_tensor(targets, device=logp.device).unsqueeze(-1)
        return logp.gather(-1, index).squeeze(-1).cpu().numpy().astype(np.float64)

    def _rnn(self, arr: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(arr, device=self.device).unsqueeze(0)  # [1, T]
        controls = None
        if self.controls is not None:
            # the model reads token t with the controls of token t+1 (Magenta's alignment, as in training)
            controls = self.controls(arr)[1:].unsqueeze(0).to(self.device)  # [1, T-1, 22]
        logits, _ = self.model(x[:, :-1], controls)  # [1, T-1, V]
        return self._picked(logits[0], arr[1:])

    def _transformer(self, arr: np.ndarray) -> np.ndarray:
        window = self.model.config.max_seq_len
        if window < 2:
            raise ValueError("a Transformer with max_seq_len < 2 cannot predict anything")
        out = np.empty(len(arr) - 1)
        start, scored = 0, 0  # `scored` tokens of arr[1:] have a value
        while scored < len(arr) - 1:
            chunk = arr[start : start + window]
            logits, _ = self.model(torch.as_tensor(chunk, device=self.device).unsqueeze(0))  # [1, L, V]
            first = scored - start  # position in the chunk whose *next* token is the first unscored one
            values = self._picked(logits[0, first : len(chunk) - 1], chunk[first + 1 :])
            out[scored : scored + len(values)] = values
            scored += len(values)
            start += window // 2
        return out
