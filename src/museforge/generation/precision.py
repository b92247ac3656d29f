"""`precision="auto"`, decided by measuring: float16 weights only where they agree with float32 AND sample
faster on this machine.

Halving the weights' bytes helps where reading them bounds a token (1.8x on a 2-core EPYC), but a CPU without
float16 arithmetic converts every element, and on an Intel Xeon float16 was no faster for the REMI Transformer
and 1.45x slower for MuseMorphose. So `decide_precision` times the one-token decoding step both ways, best of a
few interleaved runs, and keeps the decision in ``<var>/precision.json`` keyed by CPU model, torch version and
model: the next load on this machine reuses it, another machine (or torch, or weights) measures again.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from museforge.io import atomic_write_json
from museforge.machine import cpu_model, var_dir

CACHE_FILE = "precision.json"
PROBE_STEPS = 24  # one-token decoding steps timed per run
PROBE_RUNS = 3  # interleaved runs per precision; the best counts, as a shared CPU's speed drifts
MIN_SPEEDUP = 1.1  # float16 must be this much faster to be chosen: a tie is not worth its rounding


@dataclass
class PrecisionDecision:
    """What `auto` chose for a model on a machine, from what was measured there."""

    precision: str  # "fp16" or "fp32"
    reason: str
    cpu: str
    torch: str
    model: str
    threads: int
    fp32_tok_s: float | None = None
    fp16_tok_s: float | None = None
    cached: bool = False  # read from the cache rather than measured by this process

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        source = "cached probe" if self.cached else "probe"
        return f"{self.precision} by {source}: {self.reason}"


def model_key(weights: Path) -> str:
    """The weights as the cache knows them: path, size and modification time (new weights measure again)."""
    stat = weights.stat()
    return f"{weights.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def hardware(device: torch.device) -> str:
    """What runs the model: the CPU's model name, or the GPU's."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()


def cache_key(cpu: str, torch_version: str, model: str) -> str:
    return f"{cpu} | torch {torch_version} | {model}"


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}  # no cache yet, or a damaged one: measure again and rewrite it
    return data if isinstance(data, dict) else {}


def cached_decision(
    weights: Path, device: torch.device, cache_dir: Path | None = None
) -> PrecisionDecision | None:
    """This machine's recorded decision for these weights, or None when it has not measured them."""
    path = (cache_dir or var_dir()) / CACHE_FILE
    record = _read_cache(path).get(cache_key(hardware(device), torch.__version__, model_key(weights)))
    if not isinstance(record, dict):
        return None
    try:
        return PrecisionDecision(**{**record, "cached": True})
    except TypeError:
        return None


def save_decision(decision: PrecisionDecision, cache_dir: Path | None = None) -> Path:
    """Record a decision under its machine, torch and model (other entries are kept)."""
    path = (cache_dir or var_dir()) / CACHE_FILE
    entries = _read_cache(path)
    entries[cache_key(decision.cpu, decision.torch, decision.model)] = {**decision.to_dict(), "cached": False}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, entries)
    return path


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":  # kernels run asynchronously: wait for them before reading the clock
        torch.cuda.synchronize(device)


def decode_speed(model: nn.Module, steps: int = PROBE_STEPS, conditioned: bool = False) -> float:
    """Tokens per second of the one-token decoding step sampling runs at batch 1 (KV cache, incremental step;
    a ``conditioned`` decoder, such as MuseMorphose's, with a zero condition)."""
    device = next(model.parameters()).device
    ids = torch.zeros(1, dtype=torch.long, device=device)
    cond = torch.zeros(1, model.config.d_model, device=device) if conditioned else None
    with torch.inference_mode():
        step, cache = model.incremental_decoder(), model.new_cache()
        step(ids, cache, cond)  # allocates the cache: not part of the rate
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step(ids, cache, cond)
        _synchronize(device)
        return steps / (time.perf_counter() - start)


def measure_precision(
    fp32: nn.Module, fp16: nn.Module, weights: Path, conditioned: bool = False
) -> PrecisionDecision:
    """Time both models' decoding step (best of `PROBE_RUNS` interleaved runs) and choose."""
    decode_speed(fp32, 2, conditioned), decode_speed(fp16, 2, conditioned)  # warm-up
    runs: dict[str, list[float]] = {"fp32": [], "fp16": []}
    for _ in range(PROBE_RUNS):
        runs["fp32"].append(decode_speed(fp32, PROBE_STEPS, conditioned))
        runs["fp16"].append(decode_speed(fp16, PROBE_STEPS, conditioned))
    fast32, fast16 = max(runs["fp32"]), max(runs["fp16"])
    ratio = fast16 / fast32
    chosen = "fp16" if ratio >= MIN_SPEEDUP else "fp32"
    return PrecisionDecision(
        precision=chosen,
        reason=f"fp16 {ratio:.2f}x the tokens/s of fp32 ({fast16:.0f} vs {fast32:.0f}; fp16 needs "
        f"{MIN_SPEEDUP}x)",
        cpu=hardware(next(fp32.parameters()).device),
        torch=torch.__version__,
        model=model_key(weights),
        threads=torch.get_num_threads(),
        fp32_tok_s=round(fast32, 1),
        fp16_tok_s=round(fast16, 1),
    )


def unfaithful(reason: str, weights: Path, device: torch.device) -> PrecisionDecision:
    """The decision where float16 disagrees with float32: fp32, whatever the speed (not machine-specific, but
    recorded the same way so the probe is not run again)."""
    return PrecisionDecision(
        precision="fp32",
        reason=reason,
        cpu=hardware(device),
        torch=torch.__version__,
        model=model_key(weights),
        threads=torch.get_num_threads(),
    )


__all__ = [
    "CACHE_FILE",
    "MIN_SPEEDUP",
    "PrecisionDecision",
    "cache_key",
    "cached_decision",
    "decode_speed",
    "hardware",
    "measure_precision",
    "model_key",
    "save_decision",
    "unfaithful",
]
