"""Bar infilling: does the seam hear the music after the gap, and how long does a fill-in take? One JSON line.

For each piece of the model's shipped held-out set (`heldout/`, never trained on) a gap of ``--bars`` bars is
chosen at random with music on both sides; the gap's NLL (nats/token, `middle_nll`) is measured with the
piece's own bars after it and with another held-out piece's bars there instead. A model that fills in from both
sides scores the real continuation lower: ``real_lower_share`` is the share of pieces where it does. Then the
time to fill bars 3-6 of the chorale bwv66.6 (four parts) and write the song to WAV, model loaded, best of
``--repeats``.

    .venv/bin/python benchmarks/bench_infill.py [--model remi-transformer] [--bars 2] [--pieces 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import music21
import numpy as np
import torch

from museforge.audio import render_to_file
from museforge.data.formats import load_score
from museforge.data.manifest import load_manifest
from museforge.families.remi.infill import middle_nll, with_suffix
from museforge.families.serving import generate_song, get_model
from museforge.lab.heldout import HELDOUT
from museforge.machine import cpu_model


def seam(model_name: str, bars: int, pieces: int, seed: int) -> dict:
    loaded = get_model(model_name)
    tok, model = loaded.tokenizer, loaded.checkpoint.model.eval()
    heldout = loaded.path / HELDOUT
    records = load_manifest(heldout)
    rng = np.random.default_rng(seed)
    encs = []
    for r in records:
        enc = tok.encode(
            load_score(r.midi_path(heldout)), style=r.style if r.style in tok.style_ids else None
        )
        if len(enc.bar_starts) >= bars + 4:
            encs.append((r.style, enc))
    rng.shuffle(encs)
    own, other = [], []
    for i, (_, enc) in enumerate(encs[:pieces]):
        first = int(rng.integers(2, len(enc.bar_starts) - bars - 1))
        last = first + bars - 1
        partner = encs[(i + 1 + int(rng.integers(len(encs) - 1))) % len(encs)][1]
        own.append(middle_nll(model, tok, enc, first, last))
        other.append(middle_nll(model, tok, with_suffix(enc, last, partner), first, last))
    own_a, other_a = np.array(own), np.array(other)
    return {
        "pieces": len(own),
        "gap_bars": bars,
        "nll_real_suffix": round(float(own_a.mean()), 4),
        "nll_other_suffix": round(float(other_a.mean()), 4),
        "real_lower_share": round(float((own_a < other_a).mean()), 3),
    }


def latency(model_name: str, repeats: int) -> dict:
    loaded = get_model(model_name)
    chorale = load_score(music21.corpus.getWork("bach/bwv66.6"))
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            start = time.perf_counter()
            (song,) = generate_song(loaded, primer=chorale, infill="3-6", seed=i)
            render_to_file(song.score, Path(tmp) / "fill.wav")
            times.append(time.perf_counter() - start)
    return {"fill_4_bars_to_wav_s": round(min(times), 3), "fill_runs_s": [round(t, 3) for t in times]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="remi-transformer")
    parser.add_argument("--bars", type=int, default=2, help="Bars in each gap.")
    parser.add_argument("--pieces", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    line = {"bench": "infill", "cpu": cpu_model(), "threads": args.threads, "model": args.model}
    line |= seam(args.model, args.bars, args.pieces, args.seed) | latency(args.model, args.repeats)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
