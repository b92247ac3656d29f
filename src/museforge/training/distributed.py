"""Process-group setup read from the environment torchrun creates, so one script runs on 1 or N devices."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: ``rank`` of ``world_size`` processes (``local_rank`` on its node)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and progress bars."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """Read ``WORLD_SIZE``/``RANK``/``LOCAL_RANK`` (set by torchrun); a plain run is one process of rank 0."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent WORLD_SIZE={world} / RANK={rank}")
    return DistInfo(world, rank, local)


def select_device(name: str = "auto") -> torch.device:
    """The device a caller should put the model on: ``auto`` picks this process's GPU (``LOCAL_RANK``) if
    there is one, else Apple's MPS, else the CPU; any other name is passed to ``torch.device``."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", dist_info().local_rank % torch.cuda.device_count())
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (nccl for CUDA devices, gloo otherwise)."""
    info = dist_info()
    if info.world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so a run is repeatable."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, object]:
    """The global RNG states, in types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, object] = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, object]) -> None:
    """Restore what `rng_state` captured."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy(), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
