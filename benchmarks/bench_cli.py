"""The command line's own costs, each a fresh process as a user runs it: `museforge --help`, `museforge models
list`, a cold 16-bar generation, and generation with the default thread choice vs ``--threads 1`` vs every core,
while the machine is loaded. Prints one JSON line with the CPU model.

The load is ``--load`` busy processes (default: one per CPU) started here and stopped when the benchmark ends,
each also stopping itself after ``--load-limit`` seconds. ``--src`` runs another checkout's code (e.g. the code
before a change) with this benchmark. Every figure is the best of ``--repeats`` runs (the median too), because
a shared CPU's speed drifts; a generation that outlasts ``--timeout`` counts as that many seconds.

Compiled bytecode is kept (in the benchmark's temporary folder) as an installed package keeps it, even where
PYTHONDONTWRITEBYTECODE is set; ``--no-bytecode-cache`` compiles every module in every run instead.

    .venv/bin/python benchmarks/bench_cli.py [--src PATH/src] [--load 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from museforge.machine import cpu_model

SRC = Path(__file__).resolve().parents[1] / "src"
SAMPLING = re.compile(r"sampling ([0-9.]+) s")


@contextmanager
def background_load(processes: int, limit_s: float) -> Iterator[None]:
    """``processes`` busy loops, each ending itself after ``limit_s`` seconds, stopped on exit."""
    spin = f"import time\nend = time.monotonic() + {limit_s}\nwhile time.monotonic() < end:\n    pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(processes)]
    try:
        time.sleep(2.0 if procs else 0.0)  # let the load settle on the cores
        yield
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()


def timed(args: list[str], env: dict[str, str], timeout: float) -> tuple[float, float | None]:
    """Wall seconds of ``museforge ARGS`` in a fresh interpreter, and the sampling seconds it printed."""
    start = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "museforge", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return timeout, None
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"museforge {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    found = SAMPLING.search(done.stdout)
    return wall, float(found.group(1)) if found else None


def measure(args: list[str], env: dict[str, str], repeats: int, timeout: float) -> dict[str, float | None]:
    runs = [timed(args, env, timeout) for _ in range(repeats)]
    walls = [w for w, _ in runs]
    sampled = [s for _, s in runs if s is not None]
    result: dict[str, float | None] = {
        "best_s": round(min(walls), 3),
        "median_s": round(statistics.median(walls), 3),
    }
    if sampled:
        result["sampling_best_s"] = round(min(sampled), 3)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=SRC, help="the museforge source folder to run")
    parser.add_argument("--load", type=int, default=len(os.sched_getaffinity(0)), help="busy processes")
    parser.add_argument("--load-limit", type=float, default=900.0, help="seconds after which the load stops")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bars", type=int, default=16)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one generation may take")
    parser.add_argument(
        "--no-bytecode-cache", action="store_true", help="compile every module in every run (no .pyc files)"
    )
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONPATH": str(args.src.resolve()), "MUSEFORGE_VAR_DIR": tmp}
        env.pop("MUSEFORGE_THREADS", None)
        song = ["generate", "--out", str(Path(tmp) / "song.mid"), "--bars", str(args.bars), "--seed", "0"]
        if not args.no_bytecode_cache:  # kept out of the checkout: --src may be another's worktree
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            warm_up = {**env, "MUSEFORGE_VAR_DIR": str(Path(tmp) / "warm-up")}  # its own precision probe
            for command in (["models", "list"], song):  # compile once, outside every figure
                timed(command, warm_up, args.timeout)
        result: dict[str, object] = {
            "benchmark": "cli",
            "cpu": cpu_model(),
            "cores": cores,
            "src": str(args.src),
            "load_processes": args.load,
            "repeats": args.repeats,
            "bars": args.bars,
            "bytecode_cache": not args.no_bytecode_cache,
        }
        result["loadavg_1min_unloaded"] = round(os.getloadavg()[0], 2)  # others' load: the machine is shared
        first, _ = timed(song, env, args.timeout)  # a first run measures and caches the precision probe
        result["first_generate_s"] = round(first, 3)
        quiet = {
            "help": ["--help"],
            "models_list": ["models", "list"],
            "generate_cold": song,
        }
        for name, command in quiet.items():
            result[name] = measure(command, env, args.repeats, args.timeout)
        with background_load(args.load, args.load_limit):
            result["loadavg_1min"] = round(os.getloadavg()[0], 2)
            for name, extra in (
                ("default", []),
                ("one", ["--threads", "1"]),
                ("all", ["--threads", str(cores)]),
            ):
                result[f"loaded_generate_threads_{name}"] = measure(
                    song + extra, env, args.repeats, args.timeout
                )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
