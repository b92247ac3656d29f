"""Training: one loop for every model family, and the process-group helpers it uses under torchrun."""

from museforge.training.distributed import (
    DistInfo,
    dist_info,
    init_distributed,
    seed_everything,
    select_device,
)
from museforge.training.trainer import StepFn, TrainConfig, Trainer, TrainResult, lm_step

__all__ = [
    "DistInfo",
    "StepFn",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "dist_info",
    "init_distributed",
    "lm_step",
    "seed_everything",
    "select_device",
]
