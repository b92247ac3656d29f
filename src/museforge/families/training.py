"""Training runs: a family (any of its spellings), a dataset folder and a preset become a run folder with
checkpoints, and a run folder resumes exactly where it stopped.

A run records its request in ``run.json``: the family's name (runs made before the families had homes stored
the checkpoint's model name, ``transformer`` or ``performance_rnn``, which `get_family` still reads), the data,
the preset and the overrides, so `resume_run` rebuilds the same trainer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from museforge.families import get_family, load_checkpoint
from museforge.families.musemorphose.loss import VAEStep
from museforge.io import atomic_write_json
from museforge.training.recipes import (
    RUN_FILE,
    RunOptions,
    TrainingRun,
    inherited_config,
    read_run,
    start_from,
)
from museforge.training.trainer import TrainResult


def prepare_training(model: str, data_dir: Path, preset: str, out_dir: Path, **options: Any) -> TrainingRun:
    """The datasets, model and trainer of family ``model`` at ``preset`` (options: `RunOptions`' fields)."""
    return get_family(model).prepare_training(Path(data_dir), preset, out_dir, RunOptions(**options))


def start_run(
    model: str,
    data_dir: Path,
    preset: str,
    out_dir: Path,
    *,
    device: str = "cpu",
    train_overrides: dict[str, Any] | None = None,
    model_overrides: dict[str, Any] | None = None,
    max_shift: int = 6,
    unset_p: float = 0.25,
    init_from: Path | None = None,
    infill: float = 0.0,
) -> TrainResult:
    """Train a new run, recording the request in ``out_dir/run.json`` so `resume_run` can rebuild it.

    ``init_from`` starts from a checkpoint's weights instead of a random init: fine-tuning, or continuing a run
    whose optimizer state is gone, with a fresh optimizer and schedule (a MuseMorphose's β cycle goes on from
    the checkpoint's step, recorded as ``init_step``). The model is then the checkpoint's (its config, recorded
    as ``init_config``, replaces the preset's model; the preset still gives the training recipe), changed only
    by ``model_overrides``, e.g. a MuseGAN given binary neurons; weights the overrides add start fresh and are
    listed in run.json as ``init_fresh``. Fields the data decides (vocabulary, tracks, genres) must agree,
    except for tokens appended to the vocabulary (``infill`` > 0 adds the fill tokens; their rows start fresh).
    ``infill`` is the share of training windows rearranged to fill in the middle (0: none).
    """
    family = get_family(model)
    family.recipe(preset)  # an unknown preset is refused before the run folder is made
    if infill and not family.fills_in:
        raise ValueError(f"a {family.label} cannot be trained to fill in: leave out --infill")
    if (out_dir / "last").exists():
        raise ValueError(f"{out_dir} already holds a run: resume it, or choose another --out")
    request = {
        "model": family.name,
        "data_dir": str(data_dir),
        "preset": preset,
        "max_shift": max_shift,
        "unset_p": unset_p,
        "infill": infill,
        "train_overrides": train_overrides or {},
        "model_overrides": model_overrides or {},
        "init_from": str(init_from) if init_from is not None else None,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / RUN_FILE, request)
    return _run(request, out_dir, device, resume=False)


def resume_run(out_dir: Path, *, device: str = "cpu", max_steps: int | None = None) -> TrainResult:
    """Continue a run exactly where its last checkpoint left it (optionally to a new ``max_steps``)."""
    return _run(read_run(out_dir, max_steps), out_dir, device, resume=True)


def _run(request: dict[str, Any], out_dir: Path, device: str, resume: bool) -> TrainResult:
    family = get_family(request["model"])
    source = load_checkpoint(request["init_from"]) if request.get("init_from") and not resume else None
    if source is not None:
        request["init_config"] = inherited_config(source.config.to_dict(), family.data_fields)
    options = RunOptions(
        device=device,
        train_overrides=request["train_overrides"],
        model_overrides={**request.get("init_config", {}), **request["model_overrides"]},
        max_shift=request["max_shift"],
        unset_p=request["unset_p"],
        infill=request.get("infill", 0.0),
    )
    run = family.prepare_training(Path(request["data_dir"]), request["preset"], out_dir, options)
    if source is not None:
        start_from(run, request, source, out_dir, family.data_filters)
    if isinstance(run.trainer.step_fn, VAEStep):
        run.trainer.step_fn.step_offset = request.get("init_step", 0)
    return run.trainer.fit(resume=resume)
