"""Decoding alone, one at a time against batched: prints one JSON line.

``--songs`` REMI songs of ``--bars`` bars with the shipped REMI Transformer (its grammar, stop rule and
progress hook, as a job samples them), each with its own seed: first one after another (`sample_remi` alone,
what a worker without batching does per job slot), then all asked at once from ``--songs`` threads of one
`BatchedDecoder` (what a batching worker does). Both run in this process with the same torch thread count, so
their times compare. Also counts the batched songs that are token for token the song their seed gives alone
(`museforge.generation.batched` says why a song may differ: rarely, where float rounding decides a draw).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import torch

from museforge.machine import cpu_model
from museforge.web.catalog import ModelCatalog


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--songs", type=int, default=20)
    ap.add_argument("--bars", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--precision", default="auto", help="as the app's MUSEFORGE_PRECISION")
    ap.add_argument("--models-dir", type=Path, default=None, help="default: the shipped models")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as var:
        alone = ModelCatalog(args.models_dir, "cpu", args.precision, Path(var)).get(None)
        batched = ModelCatalog(args.models_dir, "cpu", args.precision, Path(var), batching=True).get(None)
    family = alone.family
    assert batched.loaded.batcher is not None
    requests = [family.parse({"bars": args.bars, "seed": 1000 + i}) for i in range(args.songs)]
    family.sample(alone.loaded, family.parse({"bars": 1, "seed": 0}))  # warm-up
    start = time.perf_counter()
    solo = [family.sample(alone.loaded, r, None, lambda _: None)[0] for r in requests]
    solo_s = time.perf_counter() - start

    together: dict[int, list[int]] = {}
    gate = threading.Barrier(args.songs)

    def ask(i: int) -> None:
        gate.wait()
        together[i] = family.sample(batched.loaded, requests[i], None, lambda _: None)[0].tokens

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(args.songs)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    batched_s = time.perf_counter() - start
    tokens = sum(s.new_tokens for s in solo)
    print(json.dumps({
        "bench": "batched_decode", "cpu": cpu_model(), "torch_threads": args.threads,
        "model": alone.info.name, "precision": alone.loaded.precision,
        "batched_precision": batched.loaded.batcher.precision, "songs": args.songs, "bars": args.bars,
        "new_tokens": tokens, "one_at_a_time_s": round(solo_s, 3), "batched_s": round(batched_s, 3),
        "one_at_a_time_ms_per_token": round(1000 * solo_s / tokens, 3),
        "batched_ms_per_token": round(1000 * batched_s / sum(len(t) for t in together.values()), 3),
        "speedup": round(solo_s / batched_s, 2), "largest_batch": batched.loaded.batcher.largest_batch,
        "identical_songs": sum(together[i] == s.tokens for i, s in enumerate(solo)),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
