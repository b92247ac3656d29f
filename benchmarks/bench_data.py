"""Data pipeline speed: museforge's REMI path vs raw miditok + symusic on the same files, in the same run.

Prints one JSON line:
  raw_files_per_s / raw_tokens_per_s           symusic load + miditok REMI encode (miditok's default config)
  ours_files_per_s / ours_tokens_per_s         symusic load + museforge REMI (style + per-bar attribute tokens)
  ratio_files                                  ours / raw (goal >= 0.8)
  cache_files_per_s                            `tokenize_dataset` end to end (all workers, memmap writes)
  peak_mb                                      peak resident memory of this process
  corpus_conversion                            per music21 collection: units, pieces, CPU seconds of the build

Usage: python benchmarks/bench_data.py [--data DIR] [--files N]
With --data (a dataset built from the music21 corpus, e.g. by `museforge data build --source music21`) the
MIDI files and the per-collection conversion times come from it; without, a small sample is built first.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import symusic
from miditok import REMI, TokenizerConfig

from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.dataset import TokenizeOptions, tokenize_dataset
from museforge.data.manifest import load_manifest
from museforge.io import read_jsonl
from museforge.tokenizers import build_tokenizer


def _time(fn, paths):
    tokens = 0
    start = time.perf_counter()
    for path in paths:
        tokens += fn(path)
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="a built music21 dataset (default: build a sample)")
    parser.add_argument("--files", type=int, default=400, help="MIDI files to time")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is reported)")
    args = parser.parse_args()

    tmp = None
    data = args.data
    if data is None:
        tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
        data = tmp / "ds"
        build_dataset(music21_units(), data, BuildOptions(limit=5, progress=False))
    records = load_manifest(data)[: args.files]
    paths = [str(r.midi_path(data)) for r in records]
    styles = {str(r.midi_path(data)): r.style for r in records}

    raw = REMI(TokenizerConfig(use_time_signatures=True, use_tempos=True))
    ours = build_tokenizer("remi")

    def raw_encode(path: str) -> int:
        seq = raw.encode(symusic.Score(path))
        return sum(len(s.ids) for s in seq) if isinstance(seq, list) else len(seq.ids)

    def ours_encode(path: str) -> int:
        return len(ours.encode(symusic.Score(path), style=styles[path]).ids)

    raw_s, raw_tokens = min((_time(raw_encode, paths) for _ in range(args.repeats)), key=lambda x: x[0])
    ours_s, ours_tokens = min((_time(ours_encode, paths) for _ in range(args.repeats)), key=lambda x: x[0])

    cache_start = time.perf_counter()
    tokenize_dataset(data, "remi", TokenizeOptions(progress=False, force=True))
    cache_s = time.perf_counter() - cache_start
    n_all = len(load_manifest(data))

    conversion: dict[str, dict[str, float]] = defaultdict(lambda: {"units": 0, "pieces": 0, "cpu_s": 0.0})
    for entry in read_jsonl(data / "sources.jsonl"):
        row = conversion[entry["collection"]]
        row["units"] += 1
        row["pieces"] += len(entry.get("ids", []))
        row["cpu_s"] = round(row["cpu_s"] + entry.get("seconds", 0.0), 2)

    print(
        json.dumps(
            {
                "files": len(paths),
                "raw_files_per_s": round(len(paths) / raw_s, 1),
                "raw_tokens_per_s": round(raw_tokens / raw_s),
                "ours_files_per_s": round(len(paths) / ours_s, 1),
                "ours_tokens_per_s": round(ours_tokens / ours_s),
                "ratio_files": round(raw_s / ours_s, 3),
                "cache_files_per_s": round(n_all / cache_s, 1),
                "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "corpus_conversion": dict(sorted(conversion.items())),
                "corpus_conversion_cpu_s": round(sum(r["cpu_s"] for r in conversion.values()), 1),
                "dataset": str(data) if args.data else "sample (5 units per collection)",
            }
        )
    )
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
