"""The machine a command runs on: its CPU model, the CPUs this process may use, how many torch threads to run
and where per-machine measurements are cached.

Torch's default is one thread per core of the machine. On a busy CPU that is a trap: each operation waits for
its slowest thread, and a thread that shares its core with another process makes a 0.5 s sampling job take
10-100 times longer. `choose_threads` therefore decides from what is measured when the command starts: the CPUs
the process may run on (affinity and a cgroup quota) less the load already running on the machine. It imports
nothing heavy, so the command line can decide before torch is loaded.
"""

from __future__ import annotations

import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path

THREADS_ENV = "MUSEFORGE_THREADS"
VAR_DIR_ENV = "MUSEFORGE_VAR_DIR"
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what the platform says where there is none."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _cgroup_quota(path: Path = CGROUP_CPU_MAX) -> float | None:
    """CPUs a cgroup v2 quota allows (``cpu.max`` = "quota period"), or None without a quota."""
    try:
        quota, period = path.read_text(encoding="utf-8").split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a container's CPU quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def machine_load() -> float:
    """Runnable processes averaged over the last minute (0 where the system does not say)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


@dataclass(frozen=True)
class ThreadChoice:
    """How many torch threads to run, and why (printed, so a slow run can be explained)."""

    threads: int
    reason: str

    def __str__(self) -> str:
        return f"{self.threads} thread{'s' if self.threads != 1 else ''} ({self.reason})"


def idle_threads(cpus: int, load: float, machine_cpus: int) -> int:
    """Threads that find a free CPU: the process's CPUs less the machine's load beyond them, at least one.

    The load counts runnable processes on all ``machine_cpus``; those outside this process's share are assumed
    to run there first, and what is left falls on ours.
    """
    busy_here = max(0.0, load - max(0, machine_cpus - cpus))
    return max(1, min(cpus, math.floor(cpus - busy_here + 0.5)))


def choose_threads(explicit: int | None = None, share: int = 1) -> ThreadChoice:
    """The thread count for a command: ``explicit`` (``--threads``), else ``$MUSEFORGE_THREADS``, else the CPUs
    that are idle now (see `idle_threads`), divided among ``share`` concurrent jobs."""
    if explicit is not None:
        if explicit < 1:
            raise ValueError(f"--threads must be at least 1, got {explicit}")
        return ThreadChoice(explicit, "--threads")
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{THREADS_ENV} must be a whole number of threads >= 1, got {env!r}")
        return ThreadChoice(int(env), THREADS_ENV)
    cpus, load = available_cpus(), machine_load()
    idle = idle_threads(cpus, load, os.cpu_count() or cpus)
    threads = max(1, idle // max(1, share))
    jobs = f", {share} jobs at once" if share > 1 else ""
    return ThreadChoice(threads, f"{cpus} CPUs available, load {load:.1f}{jobs}")


def use_threads(explicit: int | None = None, share: int = 1) -> ThreadChoice:
    """`choose_threads` applied to torch (imported here, after the choice, so `--help` never waits for it)."""
    choice = choose_threads(explicit, share)
    import torch

    torch.set_num_threads(choice.threads)
    return choice


def var_dir() -> Path:
    """Folder of per-machine state (``$MUSEFORGE_VAR_DIR``, default ``var/`` like the web app's)."""
    return Path(os.environ.get(VAR_DIR_ENV) or "var")


__all__ = [
    "THREADS_ENV",
    "VAR_DIR_ENV",
    "ThreadChoice",
    "available_cpus",
    "choose_threads",
    "cpu_model",
    "idle_threads",
    "machine_load",
    "use_threads",
    "var_dir",
]
