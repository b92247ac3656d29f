"""A listener panel that proves the feedback loop: prints one JSON line per round.

Scripted listeners, each with a hidden taste over measurable features of what they hear, use the real HTTP API
of a running server (`museforge serve` in its own process, a temporary var folder, the shipped models): each asks
for songs, listens (downloads the MIDI) and rates every one, 1-5 stars with noise. After each round
`museforge lab prefer` runs (a child process on the same var folder) and its gate decides. Then fresh samples of
the candidate and of the version it was tuned from (the same requests, new seeds) are rated by the panel: the
win rate is the share of (candidate, parent) pairs the panel rates higher for the candidate (ties count half).

Tastes (z-scores against the first round's songs, so every listener starts near 3 stars):

- ``busy``: dense rhythm and stepwise melody (notes per beat up, mean melodic step down);
- ``calm``: slow, wide chords (notes per beat down, pitch range up);
- ``major``: major keys (best major-scale fit minus best minor-scale fit);
- ``contrary`` (with ``--contradict``): the opposite of ``busy``, so the panel disagrees with itself.

Goal (issue 23): after 3 rounds of at most 300 ratings each, the panel prefers the promoted version in >= 65 %
of pairs, held-out NLL rises by no more than 5 %, diversity stays within the gate's tolerance; a contradicting
panel must not make the model collapse. The panel is a benchmark and a test harness, never the product's data.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import symusic

from bench_app import Deployment
from museforge.families.serving import clear_model_cache, generate_song, get_model
from museforge.machine import cpu_model
from museforge.models.versions import Registry
from museforge.models.zoo import models_dir

TASTES = {
    "busy": {"density": 1.0, "step": -1.0},
    "calm": {"density": -1.0, "range": 1.0},
    "major": {"major": 1.0},
    "contrary": {"density": -1.0, "step": 1.0},
}
STYLES = ("folk", "chorale", "fiddle")


def features(score: symusic.Score) -> dict[str, float]:
    """Notes per beat, mean melodic step of the top line (semitones), pitch range, major minus minor fit."""
    notes = [(n.time, n.pitch) for t in score.tracks if not t.is_drum for n in t.notes]
    if not notes:
        return {"density": 0.0, "step": 0.0, "range": 0.0, "major": 0.0}
    times = np.array([t for t, _ in notes])
    pitches = np.array([p for _, p in notes])
    beats = max(1.0, (times.max() - times.min()) / score.tpq + 1)
    top = [max(p for t, p in notes if t == onset) for onset in sorted(set(times.tolist()))]
    counts = np.bincount(pitches % 12, minlength=12)
    major = np.array([0, 2, 4, 5, 7, 9, 11])
    minor = np.array([0, 2, 3, 5, 7, 8, 10])

    def fit(scale: np.ndarray) -> float:
        return max(counts[(scale + root) % 12].sum() for root in range(12)) / counts.sum()

    return {
        "density": len(notes) / beats,
        "step": float(np.abs(np.diff(top)).mean()) if len(top) > 1 else 0.0,
        "range": float(pitches.max() - pitches.min()),
        "major": fit(major) - fit(minor),
    }


class Listener:
    """One scripted listener: a session on the server and a hidden taste."""

    def __init__(self, name: str, base: str, rng: np.random.Generator, noise: float) -> None:
        self.name, self.taste, self.rng, self.noise = name, TASTES[name], rng, noise
        self.client = httpx.Client(base_url=base, timeout=120)
        self.headers = {"X-CSRF-Token": self.client.get("/api/v1/auth/session").json()["csrf_token"]}
        self.scale: dict[str, tuple[float, float]] = {}

    def calibrate(self, feats: list[dict[str, float]]) -> None:
        for key in ("density", "step", "range", "major"):
            values = np.array([f[key] for f in feats])
            self.scale[key] = (float(values.mean()), float(values.std()) or 1.0)

    def utility(self, f: dict[str, float]) -> float:
        return sum(w * (f[k] - self.scale[k][0]) / self.scale[k][1] for k, w in self.taste.items())

    def stars(self, f: dict[str, float]) -> int:
        return int(np.clip(round(3 + 1.2 * self.utility(f) + self.rng.normal(0, self.noise)), 1, 5))

    def ask(self, style: str, bars: int) -> tuple[str, symusic.Score]:
        r = self.client.post("/api/v1/jobs", headers=self.headers,
                             json={"model": "remi-transformer", "style": style, "bars": bars})  # fmt: skip
        r.raise_for_status()
        job_id = r.json()["id"]
        while (job := self.client.get(f"/api/v1/jobs/{job_id}?wait=10").json())["status"] not in (
            "done",
            "failed",
        ):
            pass
        if job["status"] != "done":
            raise RuntimeError(f"job failed: {job['error']}")
        song = self.client.get(job["song_urls"][0]).json()
        return song["id"], symusic.Score.from_midi(self.client.get(song["urls"]["midi"]).content)

    def rate(self, song_id: str, stars: int) -> None:
        self.client.post(f"/api/v1/songs/{song_id}/rating", json={"value": stars}, headers=self.headers)


def samples(path: Path, n: int, bars: int, seed: int) -> list[symusic.Score]:
    loaded = get_model(path)
    return [generate_song(loaded, style=STYLES[i % len(STYLES)], bars=bars, seed=seed + i)[0].score
            for i in range(n)]  # fmt: skip


def win_rate(panel: list[Listener], new: list[symusic.Score], old: list[symusic.Score]) -> float:
    """The share of (listener, new song, old song of the same request) the listener rates higher for the new."""
    wins = []
    for listener in panel:
        for a, b in zip(new, old, strict=True):
            sa, sb = listener.stars(features(a)), listener.stars(features(b))
            wins.append(1.0 if sa > sb else 0.5 if sa == sb else 0.0)
    return float(np.mean(wins))


def run_round(panel: list[Listener], round_no: int, args: argparse.Namespace, var: Path) -> dict:
    asked = []
    for i in range(args.songs):
        for listener in panel:
            song_id, score = listener.ask(STYLES[i % len(STYLES)], args.bars)
            asked.append((listener, song_id, features(score)))
    if round_no == 1:
        for listener in panel:
            listener.calibrate([f for _, _, f in asked])
    ratings = [listener.stars(f) for listener, _, f in asked]
    for (listener, song_id, _), stars in zip(asked, ratings, strict=True):
        listener.rate(song_id, stars)
    started = time.perf_counter()
    command = [sys.executable, "-m", "museforge", "lab", "prefer", "--model", "remi-transformer",
               "--method", args.method, "--max-steps", str(args.max_steps), "--lr", str(args.lr),
               *(["--beta", str(args.beta)] if args.beta else []),
               "--transposed-copies", str(args.transposed_copies)]  # fmt: skip
    done = subprocess.run(command, env={**os.environ, "MUSEFORGE_VAR_DIR": str(var)}, capture_output=True,
                          text=True, check=True)  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    line = {"bench": "preference", "cpu": cpu_model(), "round": round_no, "ratings": len(ratings),
            "mean_rating": float(np.mean(ratings)), "decision": result["decision"], "reasons": result["reasons"],
            "prefer_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    if result["candidate"] is not None:
        registry = Registry(var / "resource" / "registry", models_dir())
        candidate = registry.get("remi-transformer", result["candidate"])
        parent = registry.get("remi-transformer", candidate.parent)
        clear_model_cache()
        new = samples(
            registry.path("remi-transformer", candidate), args.eval_samples, args.bars, 10_000 * round_no
        )
        old = samples(
            registry.path("remi-transformer", parent), args.eval_samples, args.bars, 10_000 * round_no
        )
        metrics = result["metrics"]
        line |= {
            "win_rate": win_rate(panel, new, old),
            "heldout_nll": {side: metrics[side]["nll"] for side in ("production", "candidate")},
            "nll_rise": metrics["candidate"]["nll"] / metrics["production"]["nll"] - 1,
            "diversity": {
                side: {k: metrics[side][k] for k in ("distinct_4grams", "pitch_class_entropy")}
                for side in ("production", "candidate")
            },
        }
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--songs", type=int, default=100, help="Songs per listener per round.")
    parser.add_argument("--bars", type=int, default=8)
    parser.add_argument("--method", default="kto", choices=("kto", "dpo"))
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=5e-5, help="Peak learning rate of `lab prefer`.")
    parser.add_argument(
        "--beta", type=float, default=None, help="`lab prefer --beta` (default: the method's)."
    )
    parser.add_argument("--transposed-copies", type=int, default=0, help="`lab prefer --transposed-copies`.")
    parser.add_argument("--eval-samples", type=int, default=24)
    parser.add_argument("--noise", type=float, default=0.5, help="Stars' noise (standard deviation).")
    parser.add_argument("--contradict", action="store_true", help="Add a listener who wants the opposite.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--models-dir", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    os.environ.update(MUSEFORGE_RATE_LIMIT_ADDRESS_JOBS="100000", MUSEFORGE_RATE_LIMIT_JOBS="100000")
    with tempfile.TemporaryDirectory(prefix="museforge-bench-preference-") as tmp:
        var = Path(tmp) / "var"
        os.environ["MUSEFORGE_VAR_DIR"] = str(var)
        server = Deployment("inprocess", Path(tmp), args)  # `museforge serve` on var, the in-process queue
        base = server.base
        try:
            rng = np.random.default_rng(args.seed)
            names = ["busy", "calm", "major", *(["contrary"] if args.contradict else [])]
            panel = [Listener(name, base, rng, args.noise) for name in names]
            for round_no in range(1, args.rounds + 1):
                print(json.dumps(run_round(panel, round_no, args, var), default=str), flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
