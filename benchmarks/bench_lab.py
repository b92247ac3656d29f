"""One lab cycle with the shipped REMI Transformer on N new pieces: wall time per stage and the gate's metrics.

The corpus is a replay sample of the music21 corpus built here (``--per-collection`` units of each collection);
the new pieces are validation-split tunes of the music21 folk and fiddle collections (the model never trained on
them, and they are not in its held-out set), dropped in the inbox. Everything happens in a temporary var folder,
so the shipped model and the checkout's var/ are never touched. Prints one JSON line with the CPU model.

    python benchmarks/bench_lab.py --new 50 --max-steps 200
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from museforge.data.build import BuildOptions, build_dataset, limit_per_collection
from museforge.data.corpora import music21_units
from museforge.data.manifest import load_manifest
from museforge.machine import cpu_model, use_threads
from museforge.models.zoo import models_dir, registry

MODEL = "remi-transformer"


def _new_pieces(var: Path, n: int, workers: int) -> int:
    """Validation-split folk and fiddle tunes as MIDI files in the inbox (the model never trained on them)."""
    units = limit_per_collection(music21_units(["oneills1850", "essenFolksong"]), 4 * n)
    pool = var / "pool"
    build_dataset(units, pool, BuildOptions(workers=workers, progress=False))
    valid = load_manifest(pool, "valid")[:n]
    for record in valid:
        target = var / "receive" / "inbox" / record.style / f"{record.id}.mid"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(record.midi_path(pool).read_bytes())
    return len(valid)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--new", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--per-collection", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    threads = use_threads()
    from museforge.lab.cycle import CycleOptions, Lab, update

    var = Path(tempfile.mkdtemp(prefix="museforge-bench-lab-"))
    os.environ["MUSEFORGE_VAR_DIR"] = str(var)
    started = time.perf_counter()
    corpus = var / "corpus"
    build_dataset(
        limit_per_collection(music21_units(), args.per_collection), corpus, BuildOptions(workers=args.workers)
    )
    corpus_s = time.perf_counter() - started
    n_new = _new_pieces(var, args.new, args.workers)
    lab = Lab(var, MODEL, registry(), corpus)
    result = update(lab, [], CycleOptions(max_steps=args.max_steps), log=lambda line: print(line, flush=True))
    cycle = json.loads((lab.work / "cycles.jsonl").read_text().splitlines()[-1])
    print(json.dumps({
        "bench": "lab", "cpu": cpu_model(), "threads": threads.threads, "model": str(models_dir() / MODEL),
        "new_pieces": n_new, "accepted": len(cycle["ingest"]["accepted"]), "max_steps": args.max_steps,
        "corpus_build_s": round(corpus_s, 1),
        "seconds": {k: round(v, 1) for k, v in (cycle["seconds"] or {}).items()},
        "decision": result["decision"], "reasons": result["reasons"], "metrics": result["metrics"],
    }, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
