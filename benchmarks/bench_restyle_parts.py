"""Re-styling multi-part chorales part by part against merged into one track: fidelity and time.

Each chorale is re-styled whole with the shipped MuseMorphose (``--model``) at one seed, once with
``parts="each"`` and once with ``"together"``, for each shift; fidelity is the mean per-bar chroma and groove
similarity to the source (`museforge.metrics.transfer`). Prints one JSON line per (shift, parts).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import music21
import numpy as np
import torch

from museforge.data.formats import load_score
from museforge.families.musemorphose.sample import restyle_song
from museforge.families.serving import get_model
from museforge.machine import cpu_model
from museforge.metrics.transfer import bar_similarity

CHORALES = ("bach/bwv66.6", "bach/bwv7.7", "bach/bwv11.6", "bach/bwv26.6", "bach/bwv65.2")
SHIFTS = ((0, 0), (2, -1), (0, -1), (2, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="musemorphose")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = get_model(args.model, precision="fp32")
    pieces = {w: load_score(music21.corpus.getWork(w)) for w in CHORALES}
    for rhythm, polyphony in SHIFTS:
        for parts in ("together", "each"):
            chroma, groove, seconds = [], [], []
            for source in pieces.values():
                start = time.perf_counter()
                song = restyle_song(
                    loaded, source, rhythm=rhythm, polyphony=polyphony, parts=parts, seed=args.seed
                )
                seconds.append(time.perf_counter() - start)
                sim = bar_similarity(source, song[0].score)
                chroma.append(float(np.nanmean(sim["chroma"])))
                groove.append(float(np.nanmean(sim["groove"])))
            print(json.dumps({
                "bench": "restyle_parts", "cpu": cpu_model(), "threads": args.threads, "pieces": len(pieces),
                "rhythm": rhythm, "polyphony": polyphony, "parts": parts,
                "chroma": round(statistics.mean(chroma), 3), "groove": round(statistics.mean(groove), 3),
                "median_s": round(statistics.median(seconds), 2), "max_s": round(max(seconds), 2),
            }), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
