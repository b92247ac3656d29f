"""MuseMorphose's training loss: the VAE step (reconstruction NLL + β·KL with free bits, β on the cyclical
schedule), over the batches of `museforge.data.musemorphose`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from museforge.families.musemorphose.model import (
    IGNORE_INDEX,
    MuseMorphoseConfig,
    beta_at,
    free_bits_kl,
    kl_per_dim,
)


class VAEStep:
    """The trainer's ``step_fn`` for MuseMorphose.

    Training loss: mean next-token NLL + β·(mean KL per dimension with free bits), β from `beta_at` at the
    trainer's optimizer step (passed through `on_step`) plus ``step_offset``: the steps the weights had already
    trained when a run starts from a checkpoint, so fine-tuning a trained VAE goes on with its β cycle instead
    of restarting the β = 0 warm-up. Evaluation (model in eval mode, z = mean) returns the reconstruction NLL
    per token, so the trainer's validation loss and perplexity compare across epochs whatever β was, and are
    the perplexity the paper reports.
    """

    def __init__(self, config: MuseMorphoseConfig, step_offset: int = 0) -> None:
        self.config = config
        self.step = 0
        self.step_offset = step_offset

    def on_step(self, step: int) -> None:
        self.step = step

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        logits, mu, logvar = model(batch)  # [B, T, V], [B, N, Z] x2
        targets = batch["labels"][:, 1:]  # [B, T-1]
        nll = F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX
        )
        kl = kl_per_dim(mu.float(), logvar.float())  # [B, N, Z]
        valid = batch["bar_valid"]
        kl_raw = (kl.sum(-1) * valid).sum() / valid.sum().clamp(min=1) / kl.shape[-1]
        metrics = {"tokens": float((targets != IGNORE_INDEX).sum()), "nll": nll.item(), "kl": kl_raw.item()}
        if not model.training:
            return nll, metrics
        beta = beta_at(self.step + self.step_offset, self.config)
        metrics["beta"] = beta
        return nll + beta * free_bits_kl(kl, self.config.free_bits, valid), metrics
