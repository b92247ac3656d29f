"""Re-styling multi-part chorales part by part against merged into one track: fidelity and time.

Each chorale is re-styled whole with the shipped MuseMorphose (``--model``) at one seed, once with
``parts="each"`` and once with ``"together"``, for each shift; fidelity is the mean per-bar chroma and groove
similarity to the source (`museforge.metrics.transfer`). Prints one JSON line per (shift, parts).
``--pictures DIR`` also draws bwv66.6 and its re-styles with rhythm +2, polyphony -1 as SVG piano rolls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import music21
import numpy as np
import torch

from museforge.data.formats import load_score
from museforge.families.musemorphose.sample import restyle_song
from museforge.families.serving import get_model
from museforge.machine import cpu_model
from museforge.metrics.transfer import bar_similarity
from museforge.visual import pianoroll_svg

CHORALES = ("bach/bwv66.6", "bach/bwv7.7", "bach/bwv11.6", "bach/bwv26.6", "bach/bwv65.2")
SHIFTS = ((0, 0), (2, -1), (0, -1), (2, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="musemorphose")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--pictures", type=Path, help="folder for piano rolls of bwv66.6 re-styled")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    loaded = get_model(args.model, precision="fp32")
    pieces = {w: load_score(music21.corpus.getWork(w)) for w in CHORALES}
    if args.pictures is not None:
        draw(loaded, pieces["bach/bwv66.6"], args.pictures, args.seed)
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


def draw(loaded, source, folder: Path, seed: int) -> None:
    """bwv66.6 as it is and re-styled (rhythm +2, polyphony -1) each way, as SVG piano rolls in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bwv66.6.svg").write_text(pianoroll_svg(source, title="bwv66.6"))
    for parts in ("each", "together"):
        song = restyle_song(loaded, source, rhythm=2, polyphony=-1, parts=parts, seed=seed)[0]
        title = f"bwv66.6 re-styled, rhythm +2, polyphony -1, parts {parts}, seed {seed}"
        (folder / f"bwv66.6-restyled-{parts}.svg").write_text(pianoroll_svg(song.score, title=title))


if __name__ == "__main__":
    main()
