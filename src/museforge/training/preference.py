"""Preference fine-tuning for the autoregressive families: DPO with DPOP's penalty, and KTO.

A song's log-probability is the sum of ln p(token | everything before it, its conditioning) over the tokens the
model sampled (after the prompt). The reference model is frozen, so its log-probabilities are computed once,
before training (`reference_log_probs`), and ride in the batches; the policy is the model being trained.

- DPO (Rafailov et al. 2023), on pairs (chosen, rejected) of songs for the same request:
  ``-ln σ(β [(πc - rc) - (πr - rr) - λ·max(0, rc - πc)])``. Plain DPO (λ = 0) can widen the margin by lowering
  both songs' likelihood, the chosen one's included, when the two are alike (as two samples of one request
  are); DPOP's term (Pal et al. 2024, "Smaug") penalises exactly a chosen song falling below the reference.
- KTO (Ethayarajh et al. 2024), on single songs marked desirable or not, which fits sparse real feedback:
  ``λD (1 - σ(β (r - z)))`` for a desirable song, ``λU (1 - σ(β (z - r)))`` for an undesirable one, with
  ``r = π - ref`` and ``z`` the batch's mean reward clipped at 0 and detached: the paper's estimate of the
  policy's KL from the reference, taken over the batch rather than over mismatched pairs.

Sampling is unchanged by either: they only move the weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

METHODS = ("dpo", "kto")
# β per method. DPO's 0.1 is the paper's. KTO at 0.1 raised a liked property fastest in
# tests/training/test_preference.py but lowered the liked songs' own likelihood (its loss is nearly linear
# there, so pushing the disliked songs down drags the shared weights); at 1.0 the pushes saturate once a song
# is ranked, and the liked songs gained likelihood on every seed tried.
DEFAULT_BETA = {"dpo": 0.1, "kto": 1.0}


@dataclass(frozen=True)
class PreferenceConfig:
    method: str = "kto"
    beta: float | None = (
        None  # how much a unit of reward (nats over the reference) counts; None: DEFAULT_BETA
    )
    dpop_lambda: float = 50.0  # DPOP's penalty weight (Smaug's value); 0 is plain DPO
    desirable_weight: float = 1.0  # KTO's λD
    undesirable_weight: float = 1.0  # KTO's λU

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.beta is None:
            object.__setattr__(self, "beta", DEFAULT_BETA[self.method])
        if self.beta <= 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if min(self.dpop_lambda, self.desirable_weight, self.undesirable_weight) < 0:
            raise ValueError("dpop_lambda, desirable_weight and undesirable_weight must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScoredSequence:
    """One song as the model saw it: ``tokens`` (prompt included), ``start`` the index of its first sampled
    token, ``inputs`` per-position conditioning ``[T, ...]`` the model takes by name (a Performance RNN's
    controls; empty where the conditioning is in the tokens)."""

    tokens: list[int]
    start: int
    inputs: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 1 <= self.start < len(self.tokens):
            raise ValueError(
                f"a scored sequence needs a prompt and a sampled token: start {self.start}, {len(self.tokens)} tokens"
            )


def collate_sequences(seqs: Sequence[ScoredSequence], pad_id: int = 0) -> dict[str, Any]:
    """Right-padded ``input_ids`` [B, T], ``score_mask`` [B, T] (1 at the sampled tokens) and ``inputs``."""
    length = max(len(s.tokens) for s in seqs)
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), length)
    for row, s in enumerate(seqs):
        ids[row, : len(s.tokens)] = torch.as_tensor(s.tokens)
        mask[row, s.start : len(s.tokens)] = 1.0
    inputs = {}
    for name in seqs[0].inputs:
        first = seqs[0].inputs[name]
        padded = first.new_zeros((len(seqs), length, *first.shape[1:]))
        for row, s in enumerate(seqs):
            padded[row, : len(s.tokens)] = s.inputs[name][: len(s.tokens)]
        inputs[name] = padded
    return {"input_ids": ids, "score_mask": mask, "inputs": inputs}


def sequence_log_probs(model: nn.Module, batch: dict[str, Any]) -> Tensor:
    """[B]: the sum of ln p over each row's sampled tokens (``score_mask``), each read after everything before
    it; per-position ``inputs`` are aligned with the predicted token, as in training (`lm_step`)."""
    ids, mask = batch["input_ids"], batch["score_mask"]  # [B, T], [B, T]
    extras = {k: v[:, 1:] for k, v in batch["inputs"].items()}
    logits, _ = model(ids[:, :-1], **extras)  # [B, T-1, V]
    picked = torch.log_softmax(logits.float(), dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (picked * mask[:, 1:]).sum(1)  # [B]


@torch.no_grad()
def reference_log_probs(
    model: nn.Module, seqs: Sequence[ScoredSequence], batch_size: int = 8, pad_id: int = 0
) -> list[float]:
    """The frozen reference's log-probability of each sequence (in eval mode, on the model's device)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    try:
        for i in range(0, len(seqs), batch_size):
            batch = _to(collate_sequences(seqs[i : i + batch_size], pad_id), device)
            out += sequence_log_probs(model, batch).tolist()
    finally:
        model.train(was_training)
    return out


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        "input_ids": batch["input_ids"].to(device),
        "score_mask": batch["score_mask"].to(device),
        "inputs": {k: v.to(device) for k, v in batch["inputs"].items()},
    }


def dpo_loss(
    chosen: Tensor,
    rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    dpop_lambda: float,
) -> Tensor:
    """[B] DPO losses with DPOP's penalty (module docstring); every argument is [B] log-probabilities."""
    penalty = dpop_lambda * torch.relu(ref_chosen - chosen)
    return -F.logsigmoid(beta * ((chosen - ref_chosen) - (rejected - ref_rejected) - penalty))


def kto_loss(
    policy: Tensor,
    reference: Tensor,
    desirable: Tensor,
    beta: float,
    weights: tuple[float, float] = (1.0, 1.0),
) -> tuple[Tensor, Tensor]:
    """([B] KTO losses, the KL estimate z): ``desirable`` is a [B] bool; ``weights`` are (λD, λU)."""
    reward = policy - reference  # [B]
    z = reward.mean().clamp(min=0).detach()
    good = weights[0] * (1 - torch.sigmoid(beta * (reward - z)))
    bad = weights[1] * (1 - torch.sigmoid(beta * (z - reward)))
    return torch.where(desirable, good, bad), z


@dataclass
class PreferenceItem:
    """One training example: a pair (``rejected`` set, DPO) or a single song marked ``desirable`` (KTO), with
    the reference's log-probabilities of its songs."""

    chosen: ScoredSequence
    ref_chosen: float
    rejected: ScoredSequence | None = None
    ref_rejected: float = 0.0
    desirable: bool = True


class PreferenceCollator:
    """Batches `PreferenceItem`s for `PreferenceStep`: a DPO batch stacks the chosen rows, then the rejected."""

    def __init__(self, pad_id: int = 0) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[PreferenceItem]) -> dict[str, Any]:
        paired = items[0].rejected is not None
        seqs = [i.chosen for i in items]
        refs = [i.ref_chosen for i in items]
        if paired:
            seqs += [i.rejected for i in items if i.rejected is not None]
            refs += [i.ref_rejected for i in items]
        return {
            **collate_sequences(seqs, self.pad_id),
            "reference": torch.tensor(refs),
            "desirable": torch.tensor([i.desirable for i in items]),
        }


class PreferenceStep:
    """The trainer's ``step_fn`` for preference fine-tuning (`museforge.training.Trainer`)."""

    def __init__(self, config: PreferenceConfig) -> None:
        self.config = config

    def __call__(self, model: nn.Module, batch: dict[str, Any]) -> tuple[Tensor, dict[str, float]]:
        c = self.config
        policy = sequence_log_probs(model, batch)  # [B] or [2B]
        reference = batch["reference"]
        if c.method == "dpo":
            b = policy.shape[0] // 2
            losses = dpo_loss(policy[:b], policy[b:], reference[:b], reference[b:], c.beta, c.dpop_lambda)
            margin = (policy[:b] - reference[:b]) - (policy[b:] - reference[b:])
            return losses.mean(), {
                "reward_accuracy": (margin > 0).float().mean().item(),
                "chosen_shift": (policy[:b] - reference[:b]).mean().item(),
            }
        weights = (c.desirable_weight, c.undesirable_weight)
        losses, z = kto_loss(policy, reference, batch["desirable"], c.beta, weights)
        return losses.mean(), {"kl": z.item(), "reward": (policy - reference).mean().item()}


def disable_dropout(model: nn.Module) -> None:
    """Dropout off: the policy's log-probabilities must be comparable with the reference's, taken in eval mode
    (as TRL's preference trainers do)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
