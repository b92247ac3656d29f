"""How long each shipped model takes for the app's default request, as a person waits for it: sampling plus the
OGG the song page plays, model already loaded, one torch thread (the app's share of a 2-core machine with two
workers), precision ``auto`` as the app serves. The figures behind the "how long it takes" of each model's
description (the first line of its MODEL_CARD.md).

Requests: generate with the form's defaults (REMI Transformer and MuseMorphose 16 bars, Performance RNN 20 s,
MuseGAN 8 bars), and from the chorale bwv66.6 (four parts, 9 bars): continue it by 16 bars (REMI), 20 s
(Performance RNN), re-style every bar with rhythm +2 (MuseMorphose), accompany its soprano (MuseGAN). Each is the
best of ``--repeats`` runs (a shared CPU's speed drifts), in wall seconds and in this process's CPU seconds
(what an unshared core would take). Prints one JSON line with the CPU model and the load average.

    .venv/bin/python benchmarks/bench_model_requests.py [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import music21
import torch

from museforge.audio import encode_audio, render_score
from museforge.audio.render import DEFAULT_SAMPLE_RATE
from museforge.data.formats import load_score
from museforge.families.loaded import GeneratedSong
from museforge.families.musemorphose.sample import restyle_song
from museforge.families.serving import generate_song as generate
from museforge.families.serving import get_model
from museforge.machine import cpu_model
from museforge.models.zoo import model_names


def requests() -> dict[str, dict[str, Callable[[object], list[GeneratedSong]]]]:
    chorale = load_score(music21.corpus.getWork("bach/bwv66.6"))
    return {
        "remi-transformer": {
            "generate 16 bars": lambda m: generate(m, bars=16, seed=1),
            "continue bwv66.6 by 16 bars": lambda m: generate(m, bars=16, primer=chorale, seed=1),
        },
        "performance-rnn": {
            "generate 20 s": lambda m: generate(m, seconds=20.0, seed=1),
            "continue bwv66.6 by 20 s": lambda m: generate(m, seconds=20.0, primer=chorale, seed=1),
        },
        "musegan": {
            "generate 8 bars": lambda m: generate(m, style="chorale", bars=8, seed=1),
            "accompany the soprano of bwv66.6": lambda m: generate(
                m, style="chorale", bars=64, accompany=chorale, tracks={"soprano": 0}, seed=1
            ),
        },
        "musemorphose": {
            "generate 16 bars": lambda m: generate(m, bars=16, seed=1),
            "re-style every bar of bwv66.6, rhythm +2": lambda m: restyle_song(m, chorale, rhythm=2, seed=1),
        },
    }


def timed(run: Callable[[], list[GeneratedSong]]) -> tuple[float, float]:
    """Wall seconds and this process's CPU seconds (with one thread, the wall time of an unshared core)."""
    wall, cpu = time.perf_counter(), time.process_time()
    for song in run():
        encode_audio(render_score(song.score, DEFAULT_SAMPLE_RATE), DEFAULT_SAMPLE_RATE, ".ogg")
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shipped = set(model_names())
    seconds: dict[str, dict[str, dict[str, float]]] = {}
    for name, asks in requests().items():
        if name not in shipped:
            continue
        model = get_model(name, precision="auto")
        seconds[name] = {}
        for ask, run in asks.items():
            runs = [timed(lambda run=run, model=model: run(model)) for _ in range(args.repeats)]
            seconds[name][ask] = {
                "wall": round(min(w for w, _ in runs), 2),
                "cpu": round(min(c for _, c in runs), 2),
            }
    load = round(os.getloadavg()[0], 2)  # runnable processes: above the core count, wall times stretch
    print(json.dumps({"cpu": cpu_model(), "cores": os.cpu_count(), "load": load, "threads": args.threads,
                      "seconds": seconds}))  # fmt: skip


if __name__ == "__main__":
    main()
