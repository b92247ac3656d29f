"""The web app under load, on loopback only: prints one JSON line.

1. Request → playable audio: POST a 16-bar job with the default model, follow it, download its OGG; the time
   until the last byte (goal: < 2 s on 2 cores). Repeated ``--single`` times; the median is reported.
2. ``--clients`` concurrent visitors (own sessions) × ``--per-client`` generations each, every one followed to
   its audio: throughput, p50/p95 latency, errors, and lost jobs (created but neither done nor failed at the
   end; goal 0 and 0).

The server is the real app as `museforge serve` runs it, in its own process (uvicorn, the embedded SQLite store in
a temporary var folder, the in-process worker pool), so the clients here do not share its interpreter. Clients
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

from museforge.store import open_repository


def start_server(var: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    """`museforge serve` on a free loopback port, with this run's settings; returns once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "MUSEFORGE_RATE_LIMIT_JOBS": "10000",
        "MUSEFORGE_MAX_BARS": str(max(64, args.bars)),
    }
    command = [sys.executable, "-m", "museforge", "serve", "--port", str(port), "--var", str(var)]
    command += ["--workers", str(args.workers)]
    if args.models_dir is not None:
        command += ["--models-dir", str(args.models_dir)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{base}/api/v1/models", timeout=5).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise RuntimeError(f"the server did not start: {server.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", type=Path, default=None, help="default: the shipped models")
    ap.add_argument("--model", default=None, help="default: the app's default model")
    ap.add_argument("--bars", type=int, default=16)
    ap.add_argument("--single", type=int, default=3, help="request → audio repetitions")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--per-client", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2, help="job workers in the server")
    ap.add_argument("--timeout", type=float, default=900.0, help="bound on the whole load phase, seconds")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="museforge-bench-") as tmp:
        var = Path(tmp) / "var"
        server, base = start_server(var, args)
        body = {"bars": args.bars, **({"model": args.model} if args.model else {})}
        try:
            client, token = session(base)
            model = client.get("/api/v1/models").json()["default"] if args.model is None else args.model
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

            start = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(visitor, range(args.clients)))
            wall = time.perf_counter() - start
        finally:
            server.terminate()
            server.wait(60)
        repo = open_repository(var)
        ids = [job_id for _, _, job_id in results if job_id]
        lost = sum(
            1 for j in ids if (job := repo.get_job(job_id=j)) is None or job.status not in ("done", "failed")
        )
        repo.close()

    latencies = sorted(s for s, e, _ in results if e is None)
    errors = [e for _, e, _ in results if e is not None]
    q = statistics.quantiles(latencies, n=20) if len(latencies) >= 2 else [float("nan")] * 19
    print(json.dumps({
        "bench": "app", "model": model, "bars": args.bars, "cores": os.cpu_count(), "workers": args.workers,
        "request_to_audio_s": round(statistics.median(singles), 3),
        "request_to_audio_runs_s": [round(s, 3) for s in singles],
        "clients": args.clients, "per_client": args.per_client, "requests": len(results),
        "completed": len(latencies), "wall_s": round(wall, 2),
        "throughput_songs_per_s": round(len(latencies) / wall, 3),
        "p50_s": round(statistics.median(latencies), 3) if latencies else None,
        "p95_s": round(q[18], 3) if latencies else None,
        "errors": len(errors), "error_examples": errors[:3], "lost_jobs": lost,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
