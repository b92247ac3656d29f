"""Style transfer of a 16-bar piece with MuseMorphose on the CPU: seconds per transfer. Prints one JSON line.

Uses a trained checkpoint (``--model``) or, without one, a freshly initialised model of the preset (the same
cost per token: sampling is bounded by the REMI grammar's bar count, not by what the weights learned).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from museforge.data.formats import load_score
from museforge.families import build_model
from museforge.families.musemorphose.decode import DEFAULT_GUIDANCE, decoded_rows, transfer
from museforge.families.musemorphose.model import MuseMorphoseConfig
from museforge.families.serving import get_model
from museforge.machine import cpu_model
from museforge.tokenizers.remi import RemiTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", help="checkpoint folder or shipped name (default: untrained preset)")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--piece", default="bach/bwv1.6", help="a music21 corpus work")
    parser.add_argument("--bars", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=1, help="tries per bar (best of N)")
    parser.add_argument(
        "--guidance", type=float, default=DEFAULT_GUIDANCE, help="guidance weight (0: the model alone)"
    )
    parser.add_argument(
        "--precision", default="auto", help="with --model: fp32, fp16 or auto (as the app serves)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import music21

    score = load_score(music21.corpus.getWork(args.piece))
    if args.model:
        loaded = get_model(args.model, precision=args.precision)
        (model, precision), tok = (
            loaded.sampler(decoded_rows(args.candidates, args.guidance)),
            loaded.tokenizer,
        )
    else:
        tok = RemiTokenizer()
        torch.manual_seed(0)
        model = build_model(MuseMorphoseConfig.preset(args.preset, tok.vocab_size, n_bars=8)).eval()
        precision = "fp32"
    enc = tok.encode(score)
    bars = min(args.bars, len(enc.bar_starts))
    piece = tok.decode(enc.ids[: enc.bar_starts[bars]] if bars < len(enc.bar_starts) else enc.ids)
    times, tokens = [], 0
    for seed in range(args.repeats):
        start = time.perf_counter()
        result = transfer(
            model, tok, piece, rhythm=+2, polyphony=-1, seed=seed, candidates=args.candidates,
            guidance=args.guidance,
        )  # fmt: skip
        times.append(time.perf_counter() - start)
        tokens = len(result.tokens)
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "bench": "transfer", "cpu": cpu_model(), "piece": args.piece, "bars": bars, "threads": args.threads,
        "params": params,
        "candidates": args.candidates, "guidance": args.guidance, "precision": precision,
        "tokens": tokens, "seconds_median": sorted(times)[len(times) // 2], "seconds": [round(t, 3) for t in times],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
