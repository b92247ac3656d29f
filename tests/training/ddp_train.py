"""Launched by ``torchrun --nproc_per_node 2`` from test_trainer.py: trains a tiny model with the unchanged
trainer and saves this rank's parameters, so the test can compare the ranks."""

import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.training import TrainConfig, Trainer, dist_info


class Windows(Dataset):
    def __init__(self, tokens: np.ndarray, length: int) -> None:
        self.tokens = torch.as_tensor(tokens, dtype=torch.long)
        self.length = length

    def __len__(self) -> int:
        return len(self.tokens) // self.length

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.tokens[i * self.length : (i + 1) * self.length]


def main(out_dir: Path, tokens_file: Path) -> None:
    torch.set_num_threads(1)
    rank = dist_info().rank
    tokens = np.load(tokens_file)
    torch.manual_seed(rank)  # different initial weights per rank: DDP must broadcast rank 0's
    model = TransformerLM(TransformerConfig.preset("tiny", vocab_size=int(tokens.max()) + 1, dropout=0.1))
    cfg = TrainConfig(
        out_dir=str(out_dir),
        batch_size=2,
        epochs=2,
        lr=3e-3,
        warmup_steps=2,
        log_every=1,
        checkpoint_every=3,
        progress=False,
    )
    result = Trainer(model, Windows(tokens, 24), cfg, eval_data=Windows(tokens[::-1].copy(), 24)).fit()
    state = {
        "params": [p.detach() for p in model.parameters()],
        "step": result.step,
        "eval": result.last_eval,
    }
    torch.save(state, out_dir / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
