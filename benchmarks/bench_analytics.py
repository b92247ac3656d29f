"""Analytics on a full store: prints one JSON line with the CPU model.

A seeded generator fills an embedded SQLite store with ``--listeners`` listeners and ``--events`` events over
``--days`` days, with realistic skew: activity per listener is log-normal (a few heavy users), each listener
leans towards the styles of one of five taste archetypes (Dirichlet around it), some listeners rate only 1s and
5s, and every generation has a job (done or failed, with a log-normal latency). Then each measure is timed
(median of ``--repeat`` runs; goal < 300 ms each) and the Insights page is fetched from the real app as an admin
(goal < 1 s). Writes go through the repository's batch insert, as the web app's event sink does.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from museforge.analytics.insights import Scope, activity, insights, interest, my_taste, polarization, profiles
from museforge.analytics.report import insights_html
from museforge.machine import cpu_model
from museforge.store import open_repository
from museforge.store.records import DAY_S, Event, day_of

STYLES = ["chorale", "folk", "fiddle", "jig", "reel", "renaissance", "baroque", ""]
MODELS = {
    "remi-transformer": STYLES[:7],
    "musemorphose": STYLES[:2],
    "musegan": STYLES[5:7],
    "performance-rnn": [""],
}
KINDS = ["visit", "play", "play_end", "generate", "rate", "download", "share", "upload"]
WHOLE = ("insights_90_days", "insights_html")  # several measures together: not held to the 300 ms goal
KIND_P = [0.30, 0.28, 0.15, 0.13, 0.07, 0.04, 0.02, 0.01]


def fill(repo: Any, db: Path, args: argparse.Namespace) -> dict[str, float]:
    """Seeded events and jobs; returns the write timings."""
    rng = np.random.default_rng(args.seed)
    n = args.listeners
    archetypes = rng.dirichlet(np.full(len(STYLES), 0.3), size=5)
    taste = np.array([rng.dirichlet(archetypes[rng.integers(5)] * 20 + 0.05) for _ in range(n)])
    weight = rng.lognormal(0, 1.2, n)
    who = rng.choice(n, size=args.events, p=weight / weight.sum())
    today = day_of(time.time())
    first = rng.integers(0, args.days, n)
    day = today - args.days + 1 + np.minimum(first[who] + rng.geometric(0.08, args.events) - 1, args.days - 1)
    at = day * DAY_S + rng.uniform(0, DAY_S, args.events)
    kind = rng.choice(len(KINDS), size=args.events, p=KIND_P)
    cum = taste.cumsum(1)
    style = (rng.random(args.events)[:, None] > cum[who]).sum(1).clip(0, len(STYLES) - 1)
    polar = rng.random(n) < 0.3
    stars = np.where(polar[who], rng.choice([1, 5], args.events), rng.choice([2, 3, 4, 4, 5], args.events))
    model_names = list(MODELS)
    events, jobs = [], []
    for i in range(args.events):
        s = STYLES[style[i]]
        models = [m for m in model_names if s in MODELS[m]]
        m = models[i % len(models)]
        k = KINDS[kind[i]]
        value = int(stars[i]) if k == "rate" else 0
        model, st = ("", "") if k in ("visit", "upload") else (m, s)
        events.append(Event(k, f"user:{who[i]}", float(at[i]), model, st, None, value))
        if k == "generate":
            latency = float(rng.lognormal(0.3, 0.6))
            status = "failed" if rng.random() < 0.03 else "done"
            jobs.append((f"j{i}", f"user:{who[i]}", m, "generate", json.dumps({"style": st or None}), status,
                         float(at[i]), float(at[i]) + 0.05, float(at[i]) + 0.05 + latency))  # fmt: skip
    t0 = time.perf_counter()
    for start in range(0, len(events), args.batch):
        repo.record_events(events=events[start : start + args.batch])
    write_s = time.perf_counter() - t0
    with sqlite3.connect(db) as conn:  # the jobs the generations made, straight into the table
        conn.executemany(
            "INSERT INTO jobs (id, owner, model, operation, params, status, created_at, started_at, finished_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            jobs,
        )
    return {"write_s": write_s, "events_per_s": args.events / write_s, "jobs": len(jobs)}


def timed(fn: Any, repeat: int) -> tuple[float, float]:
    """Median wall and CPU milliseconds (the store runs in this process, so CPU time includes SQLite's and is
    the steadier figure on a shared machine)."""
    wall, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall) * 1000, statistics.median(cpu) * 1000


def page_ms(var: Path, repeat: int) -> tuple[float, float]:
    """GET /insights from the real app (no models loaded) as an admin."""
    from fastapi.testclient import TestClient

    from museforge.web import Settings, create_app
    from museforge.web.security import CSRF_HEADER

    models = var.parent / "no-models"
    models.mkdir(exist_ok=True)
    app = create_app(Settings(_env_file=None, var_dir=var, models_dir=models, workers=1, torch_threads=1))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        token = client.get("/api/v1/auth/session").json()["csrf_token"]
        r = client.post("/api/v1/auth/signup", json={"username": "operator", "password": "long enough"},
                        headers={CSRF_HEADER: token})  # fmt: skip
        app.state.services.repo.set_admin(user_id=r.json()["user"]["id"], admin=True)

        def get() -> None:
            assert client.get("/insights").status_code == 200

        return timed(get, repeat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--listeners", type=int, default=1000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        var = Path(tmp) / "var"
        repo = open_repository(var)
        writes = fill(repo, var / "museforge.db", args)
        scope = Scope.last(30)
        everything = Scope.last(args.days)
        me = "user:0"
        measures = {
            "active_per_day": lambda: repo.count_events(by=("day",), **scope.events()),
            "active_per_week": lambda: repo.count_events(by=("week",), **scope.events()),
            "jobs_per_day_model_style": lambda: repo.count_events(
                by=("day", "model", "style"), kinds=("generate",), **scope.events()
            ),
            "job_success_latency": lambda: repo.job_stats(
                since_day=scope.since_day, until_day=scope.until_day
            ),
            "retention_1_7": lambda: [
                repo.retention(since_day=scope.since_day, until_day=scope.until_day, after_days=k)
                for k in (1, 7)
            ],
            "activity_all": lambda: activity(repo, scope),
            "interest_by_style": lambda: interest(repo, scope, "style"),
            "interest_by_model": lambda: interest(repo, scope, "model"),
            "listener_profiles_query": lambda: profiles(repo, scope),
            "polarization_and_clusters": lambda: polarization(repo, scope),
            "my_taste": lambda: my_taste(repo, me, scope),
            "insights_90_days": lambda: insights(repo, everything),
            "insights_html": lambda: insights_html(insights(repo, scope)),
        }
        times = {name: timed(fn, args.repeat) for name, fn in measures.items()}
        ms = {name: round(t[0], 1) for name, t in times.items()}
        cpu_ms = {name: round(t[1], 1) for name, t in times.items()}
        figures = polarization(repo, scope)
        repo.close()
        page, page_cpu = page_ms(var, args.repeat)
    print(json.dumps({
        "bench": "analytics", "cpu": cpu_model(), "listeners": args.listeners, "events": args.events,
        "days": args.days, **{k: round(v, 1) for k, v in writes.items()}, "ms": ms, "cpu_ms": cpu_ms,
        "insights_page_ms": round(page, 1), "insights_page_cpu_ms": round(page_cpu, 1), "load_avg": os.getloadavg(),
        "clusters": len(figures["clusters"]), "esteban_ray": figures["esteban_ray"],
        "over_300ms_cpu": sorted(k for k, v in cpu_ms.items() if v > 300 and k not in WHOLE),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
