"""Training throughput and the trainer's overhead against a bare PyTorch loop on the same model and batches.

Prints one JSON line: tokens/s of `Trainer.fit` and of a hand-written loop (AdamW, clipping, the same
windows in the same order, no evaluation or checkpoints in either), and their time ratio (goal ≤ 1.1); on a
CPU with native bf16 (AVX-512 BF16, AMX) also `Trainer.fit` under `precision="bf16"` and its speed-up over
fp32 (null elsewhere).

Usage: python benchmarks/bench_train.py [--data DIR] [--preset small] [--steps 30] [--threads N]
Without --data a small dataset of chorales and folk tunes is built first.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.dataset import IGNORE_INDEX, TokenizeOptions, TokenWindowDataset, tokenize_dataset
from museforge.families import build_model
from museforge.families.remi.model import TransformerConfig
from museforge.training.trainer import TrainConfig, Trainer


def bare_loop(model: torch.nn.Module, loader: DataLoader, steps: int, lr: float) -> tuple[float, int]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    model.train()
    tokens, start = 0, time.perf_counter()
    for step, batch in enumerate(loader):
        if step == steps:
            break
        ids, labels = batch["input_ids"], batch["labels"]
        logits, _ = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        tokens += int((labels[:, 1:] != IGNORE_INDEX).sum())
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data = args.data
    if data is None:
        data = Path(tempfile.mkdtemp(prefix="bench_train_")) / "ds"
        build_dataset(music21_units(["bach", "essenFolksong"]), data, BuildOptions(limit=60, progress=False))
    tokenize_dataset(data, "remi", TokenizeOptions(progress=False))
    windows = TokenWindowDataset(data, "remi", "train", args.seq_len)
    vocab = windows.cache.tokenizer().vocab_size
    config = TransformerConfig.preset(args.preset, vocab, max_seq_len=max(args.seq_len, 128))

    torch.manual_seed(0)
    model = build_model(config)
    loader = DataLoader(
        windows,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(0),
    )
    bare_loop(model, loader, 3, 3e-4)  # warm-up: allocator and kernels
    bare_s, bare_tokens = bare_loop(model, loader, args.steps, 3e-4)

    def trainer_seconds(precision: str) -> float:
        torch.manual_seed(0)
        with tempfile.TemporaryDirectory() as out:
            train_config = TrainConfig(
                out_dir=out,
                max_steps=args.steps + 3,
                epochs=1000,
                batch_size=args.batch_size,
                lr=3e-4,
                warmup_steps=1,
                precision=precision,
                progress=False,
                checkpoint_every=10**9,
                log_every=10**9,
            )
            trainer = Trainer(build_model(config), windows, train_config)
            trainer.fit(until_step=3)  # the same warm-up
            start = time.perf_counter()
            trainer.fit(resume=True)
            return time.perf_counter() - start

    trainer_s = trainer_seconds("fp32")
    bf16_s = trainer_seconds("bf16") if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None

    print(
        json.dumps(
            {
                "benchmark": "train",
                "preset": args.preset,
                "parameters": sum(p.numel() for p in model.parameters()),
                "batch": [args.batch_size, args.seq_len],
                "steps": args.steps,
                "torch_threads": args.threads,
                "bare_tokens_per_s": round(bare_tokens / bare_s),
                "trainer_tokens_per_s": round(bare_tokens / trainer_s),
                "trainer_over_bare": round(trainer_s / bare_s, 3),
                "trainer_bf16_tokens_per_s": round(bare_tokens / bf16_s) if bf16_s else None,
                "bf16_speedup": round(trainer_s / bf16_s, 2) if bf16_s else None,
                "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
