"""Training: one loop for every model family, and the process-group helpers it uses under torchrun."""

from museforge._lazy import lazy_exports

_EXPORTS = {
    "DistInfo": "distributed",
    "StepFn": "trainer",
    "TrainConfig": "trainer",
    "TrainResult": "trainer",
    "Trainer": "trainer",
    "dist_info": "distributed",
    "init_distributed": "distributed",
    "lm_step": "trainer",
    "seed_everything": "distributed",
    "select_device": "distributed",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)  # picking a device needs no optimizer

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
