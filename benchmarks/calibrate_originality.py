"""Calibrate `is_near_copy` on a built dataset: how much do held-out pieces overlap the training split, and
how much do copies of training pieces (verbatim, transposed, a few notes altered) overlap it?

Prints one JSON object: per style, percentiles of longest run / phrase share / copied share for the valid+test
pieces against an index of the train split, the same for the copy variants of a sample of training pieces,
and the share flagged by `is_near_copy` with its defaults.

    .venv/bin/python benchmarks/calibrate_originality.py --data var/resource/datasets/music21
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import symusic

from museforge.data.formats import load_score
from museforge.data.manifest import load_manifest
from museforge.metrics.originality import OriginalityIndex, OriginalityResult, check_originality, is_near_copy

PERCENTILES = (1, 5, 25, 50, 75, 90, 95, 99, 100)


def alter_notes(score: symusic.Score, share: float, rng: np.random.Generator) -> symusic.Score:
    """A copy with ``share`` of each pitched track's notes (at least one) moved by 1 or 2 semitones."""
    altered = score.copy()
    for track in altered.tracks:
        if track.is_drum or not len(track.notes):
            continue
        for i in rng.choice(len(track.notes), max(1, round(share * len(track.notes))), replace=False):
            note = track.notes[int(i)]
            note.pitch = int(np.clip(note.pitch + rng.choice([-2, -1, 1, 2]), 0, 127))
    return altered


def summary(results: list[OriginalityResult]) -> dict[str, object]:
    """Percentiles of the three measures and the share `is_near_copy` flags."""
    out: dict[str, object] = {"pieces": len(results)}
    for name in ("longest_run", "phrase_share", "copied_share"):
        values = np.array([getattr(r, name) for r in results], dtype=float)
        values = values[~np.isnan(values)]
        out[name] = (
            {f"p{q}": round(float(np.percentile(values, q)), 3) for q in PERCENTILES} if len(values) else {}
        )
    out["flagged"] = round(float(np.mean([is_near_copy(r) for r in results])), 4) if results else None
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a built dataset folder")
    parser.add_argument(
        "--sample", type=int, default=200, help="training pieces per style for the copy variants"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    train = load_manifest(args.data, "train")
    index, failed = OriginalityIndex.from_files(
        (r.midi_path(args.data) for r in train), source=f"{args.data}:train"
    )
    held_out = load_manifest(args.data, "valid") + load_manifest(args.data, "test")
    rng = np.random.default_rng(args.seed)
    variants: dict[str, Callable[[symusic.Score], symusic.Score]] = {
        "verbatim": lambda s: s,
        "transposed +5": lambda s: s.shift_pitch(5),
        "5% notes altered": lambda s: alter_notes(s, 0.05, rng),
        "10% notes altered": lambda s: alter_notes(s, 0.10, rng),
    }
    report: dict[str, object] = {
        "data": args.data,
        "train_pieces": index.n_pieces,
        "unreadable": len(failed),
        "n": index.n,
        "styles": {},
    }
    for style in sorted({r.style for r in held_out}):
        pieces = [
            check_originality(load_score(r.midi_path(args.data)), index) for r in held_out if r.style == style
        ]
        style_train = [r for r in train if r.style == style]
        picks = rng.choice(len(style_train), min(args.sample, len(style_train)), replace=False)
        sample = [load_score(style_train[int(i)].midi_path(args.data)) for i in picks]
        report["styles"][style] = {  # type: ignore[index]
            "held_out": summary(pieces),
            "copies": {
                name: summary([check_originality(make(s), index) for s in sample])
                for name, make in variants.items()
            },
        }
    report["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
