"""Where one generation job's time goes: prints one JSON line.

Runs ``--jobs`` real jobs (16 bars, a drawn seed, the default model: what `bench_app.py`'s clients ask) through
`JobExecutor.run` in this process, on one torch thread, against a fresh SQLite store, spread over
``--listeners`` listeners, and times its parts: decoding (`decode_remi`, re-samples of the fresh-songs check
included), rendering the audio, encoding it as OGG, the piano roll, and the rest (store writes, MIDI, checks).
Decoding's share bounds what batching it can gain: if it is a share ``d`` of a job, a batch that made it
free would give ``1 / (1 - d)`` times the songs/s at most.
"""

from __future__ import annotations

import argparse
import functools
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import museforge.families.remi.sample as remi_sample
import museforge.web.jobs as jobs
from museforge.machine import cpu_model
from museforge.store import FileStore, open_repository
from museforge.web.catalog import ModelCatalog

SECONDS: defaultdict[str, float] = defaultdict(float)
CALLS: defaultdict[str, int] = defaultdict(int)


def timed(owner: Any, name: str, label: str) -> None:
    """Replace ``owner.name`` by a wrapper that adds its wall time to ``SECONDS[label]``."""
    inner: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(inner)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            SECONDS[label] += time.perf_counter() - start
            CALLS[label] += 1

    setattr(owner, name, wrapper)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20)
    ap.add_argument("--listeners", type=int, default=4)
    ap.add_argument("--bars", type=int, default=16)
    ap.add_argument("--precision", default="auto", help="as the app's MUSEFORGE_PRECISION")
    args = ap.parse_args()
    torch.set_num_threads(1)
    timed(remi_sample, "decode_remi", "decode")
    timed(jobs, "render_score", "render_audio")
    timed(jobs, "encode_audio", "encode_ogg")
    timed(jobs, "pianoroll_svg", "pianoroll_svg")
    timed(jobs.JobExecutor, "run", "job")
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp)
        repo, files = open_repository(var), FileStore(var)
        catalog = ModelCatalog(None, "cpu", args.precision, var)
        served = catalog.get(None)
        executor = jobs.JobExecutor(repo, files, catalog)

        def one(owner: str) -> None:
            params = served.family.parse({"bars": args.bars}).model_dump(mode="json")
            params.update(operation="generate", source_upload=None, source_song=None, seed_drawn=True)
            repo.create_job(owner=owner, model=served.info.name, operation="generate", params=params)
            job = repo.claim_job()
            assert job is not None
            executor.run(job)

        one("warm-up")
        SECONDS.clear()
        CALLS.clear()
        for i in range(args.jobs):
            one(f"listener-{i % args.listeners}")
        songs = [s for i in range(args.listeners) for s in repo.list_songs(owner=f"listener-{i}", limit=1000)]
        tokens = sum(s.meta["new_tokens"] for s in songs)
        tries = sum(s.params.get("tries", 1) for s in songs)
        repo.close()
    job = SECONDS["job"]
    parts = {k: round(v / args.jobs, 4) for k, v in SECONDS.items() if k != "job"}
    parts["other"] = round((job - sum(v for k, v in SECONDS.items() if k != "job")) / args.jobs, 4)
    print(json.dumps({
        "bench": "profile_job", "cpu": cpu_model(), "torch_threads": 1, "precision": served.loaded.precision,
        "jobs": args.jobs, "bars": args.bars, "job_s": round(job / args.jobs, 4), "seconds_per_job": parts,
        "decode_share": round(SECONDS["decode"] / job, 3), "decodes_per_job": round(CALLS["decode"] / args.jobs, 2),
        "songs_tries": tries, "decode_ms_per_kept_token": round(1000 * SECONDS["decode"] / tokens, 3),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
