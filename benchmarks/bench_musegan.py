"""MuseGAN training and sampling speed, with the block-wise convolutions against torch's own in the same run.

Prints one JSON line: seconds per `GANTrainer` step (n_critic critic steps with the gradient penalty, then a
generator step) on real chorale phrases, once with museforge's `BlockConv3d` / `BlockConvTranspose3d` and once
with the same modules running `nn.Conv3d` / `nn.ConvTranspose3d`'s forward (oneDNN on a CPU), their ratio,
generated bars/s at batch 1 and 64, and peak MB. The model is the shipped one's shape (the small preset with
binary neurons, feature streams and a 2-unit refiner).

Usage: python benchmarks/bench_musegan.py [--steps 4] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.dataset import TokenizeOptions, tokenize_dataset
from museforge.families import get_family
from museforge.families.musegan.gan import PART_TRACKS, GANTrainer, PhraseDataset, pianoroll_config_for
from museforge.families.musegan.model import MuseGAN, MuseGANConfig
from museforge.models.modules import BlockConv3d, BlockConvTranspose3d
from museforge.training.trainer import TrainConfig

SHIPPED = {"binary_neurons": True, "feature_streams": True, "refiner": 2}


def build_model(block_convs: bool) -> MuseGAN:
    """The shipped shape from seed 0; without ``block_convs`` each block convolution runs torch's kernel."""
    small = {
        k: v
        for k, v in get_family("musegan").recipe("small").model.items()
        if k in MuseGANConfig.__dataclass_fields__
    }
    torch.manual_seed(0)
    model = MuseGAN(MuseGANConfig(n_tracks=4, genres=("chorale",), **small, **SHIPPED))
    if not block_convs:
        for module in model.modules():
            if isinstance(module, BlockConv3d):
                module.forward = nn.Conv3d.forward.__get__(module)
            elif isinstance(module, BlockConvTranspose3d):
                module.forward = nn.ConvTranspose3d.forward.__get__(module)
    return model


def step_seconds(data: PhraseDataset, block_convs: bool, steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        # the small preset's batch, n_critic, Adam and fp32, as `museforge train` uses them
        config = TrainConfig.from_dict(
            {
                **get_family("musegan").recipe("small").train,
                "out_dir": out,
                "max_steps": steps + 1,
                "epochs": 10**6,
                "progress": False,
                "checkpoint_every": 10**9,
                "log_every": 10**9,
            }
        )
        trainer = GANTrainer(
            build_model(block_convs), data, config, track_names=[t["name"] for t in PART_TRACKS]
        )
        trainer.fit(until_step=1)  # warm-up: allocator and kernels
        start = time.perf_counter()
        trainer.fit(resume=True)
        return (time.perf_counter() - start) / steps


def bars_per_second(model: MuseGAN, batch: int, repeats: int = 5) -> float:
    model.eval()
    genre = torch.zeros(batch, dtype=torch.long)
    with torch.no_grad():
        model(model.sample_latents(batch), genre)
        start = time.perf_counter()
        for _ in range(repeats):
            model(model.sample_latents(batch), genre)
    return batch * model.config.n_bars * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    data_dir = Path(tempfile.mkdtemp(prefix="bench_musegan_")) / "ds"
    build_dataset(music21_units(["bach"]), data_dir, BuildOptions(limit=60, progress=False))
    tokenize_dataset(
        data_dir, "pianoroll", TokenizeOptions(config=pianoroll_config_for(data_dir), progress=False)
    )
    data = PhraseDataset(data_dir, "train", ("chorale",), hop_bars=1, min_notes_per_bar=4, min_tracks=3)

    block_s = step_seconds(data, True, args.steps)
    torch_s = step_seconds(data, False, args.steps)
    model = build_model(True)
    print(
        json.dumps(
            {
                "benchmark": "musegan",
                "parameters": sum(p.numel() for p in model.parameters()),
                "phrases": len(data),
                "steps": args.steps,
                "torch_threads": args.threads,
                "step_s": round(block_s, 3),
                "torch_conv_step_s": round(torch_s, 3),
                "block_conv_speedup": round(torch_s / block_s, 2),
                "bars_per_s_batch1": round(bars_per_second(model, 1)),
                "bars_per_s_batch64": round(bars_per_second(model, 64)),
                "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
