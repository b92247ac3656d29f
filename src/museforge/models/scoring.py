"""Models as `museforge.metrics.likelihood.TokenScorer`s, so their NLL/perplexity on a split is computed by the
same code as every other model's (the n-gram baseline included): in sliding windows for a fixed-context decoder,
in one pass for a recurrent one. A family says which its model is (`museforge.families.base.Family.scorer`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn


class _Scorer:
    """``log_probs(ids)[i] = ln p(ids[i + 1] | ids[: i + 1])``; subclasses give the logits."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device

    @torch.no_grad()
    def log_probs(self, ids: Sequence[int]) -> np.ndarray:
        arr = np.asarray(ids, dtype=np.int64)
        if len(arr) < 2:
            return np.zeros(0)
        was_training = self.model.training
        self.model.eval()
        try:
            return self._scores(arr)
        finally:
            self.model.train(was_training)

    def _scores(self, arr: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _picked(logits: Tensor, targets: np.ndarray) -> np.ndarray:
        logp = torch.log_softmax(logits.float(), dim=-1)  # [T, V]
        index = torch.as_tensor(targets, device=logp.device).unsqueeze(-1)
        return logp.gather(-1, index).squeeze(-1).cpu().numpy().astype(np.float64)


class WindowScorer(_Scorer):
    """A decoder that sees at most ``config.max_seq_len`` tokens: longer sequences are scored in windows that
    overlap by half, each token by the window that gives it the longest context (the usual sliding-window
    perplexity)."""

    def _scores(self, arr: np.ndarray) -> np.ndarray:
        window = self.model.config.max_seq_len
        if window < 2:
            raise ValueError("a model with max_seq_len < 2 cannot predict anything")
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


class RecurrentScorer(_Scorer):
    """A recurrent model reads the whole sequence in one pass; ``controls(ids) -> [T, C]`` supplies its
    per-step controls (None: all unset), which ride with the previous input (Magenta's alignment, as in
    training)."""

    def __init__(self, model: nn.Module, controls: Callable[[np.ndarray], Tensor] | None = None) -> None:
        super().__init__(model)
        self.controls = controls

    def _scores(self, arr: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(arr, device=self.device).unsqueeze(0)  # [1, T]
        controls = None
        if self.controls is not None:
            controls = self.controls(arr)[1:].unsqueeze(0).to(self.device)  # [1, T-1, C]
        logits, _ = self.model(x[:, :-1], controls)  # [1, T-1, V]
        return self._picked(logits[0], arr[1:])
