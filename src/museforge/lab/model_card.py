"""Shipping a trained run as a museforge model: its best checkpoint, an originality index of its training data,
and a model card with what a user needs to judge it — data, config, training, held-out NLL, and the metrics
of its samples against held-out real music.

Everything in the card is measured here, from the run folder and the dataset; nothing is typed in by hand
except the hardware the run trained on.
"""

from __future__ import annotations

import csv
import json
import platform
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from museforge.data.manifest import load_manifest
from museforge.data.stats import dataset_stats
from museforge.families import family_of, get_family, load_checkpoint
from museforge.families.card import CardMeasures, Log, ShipOptions, fmt
from museforge.families.likelihood import heldout_likelihood
from museforge.families.serving import generate_song, get_model
from museforge.metrics.evaluate import evaluate_folder
from museforge.metrics.originality import OriginalityIndex
from museforge.models.zoo import CARD_FILE, ORIGINALITY_FILE, model_info
from museforge.tokenizers.pianoroll import PianoRollTokenizer
from museforge.training.trainer import TrainConfig, counts_as_gain

CHECKPOINT_FILES = ("model.safetensors", "config.json", "tokenizer.json")
# card sections that `resample_card` rewrites in place, found by their headings
SAMPLES_HEADING = "## Samples against held-out music"
SPEED_HEADING = "## Sampling speed"
CONFIG_HEADING = "## Config"


def _wall_seconds(rows: list[dict[str, str]]) -> float:
    """Training time over every session of a run: each ``--resume`` restarts the log's clock from zero, so a
    row whose time falls below the one before it starts a new session, and the sessions' last times add up."""
    total, last = 0.0, 0.0
    for row in rows:
        elapsed = float(row["elapsed_s"])
        if elapsed < last:
            total += last
        last = elapsed
    return total + last


def training_summary(run_dir: Path) -> dict[str, Any]:
    """Steps, epochs, wall time, throughput, the best evaluation and why the run ended, from log.csv/run.json.

    A run that was started from another run's weights (``--init``) lists that run first under ``stages``.
    """
    with (run_dir / "log.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    best_index = min(range(len(evals)), key=lambda i: float(evals[i]["loss"])) if evals else None
    best = evals[best_index] if best_index is not None else None
    tps = [float(r["tokens_per_s"]) for r in train if r.get("tokens_per_s")]
    request = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").exists() else {}
    planned = get_family(request["model"]).recipe(request["preset"]).train if request else {}
    config = TrainConfig.from_dict({**planned, **request.get("train_overrides", {})})  # as prepare_training
    since_best = len(evals) - 1 - best_index if best_index is not None else None
    reference, since_gain = None, 0  # the trainer's patience count, replayed over the logged evaluations
    for row in evals:
        if counts_as_gain(float(row["loss"]), reference, config.min_delta):
            reference, since_gain = float(row["loss"]), 0
        else:
            since_gain += 1
    lrs = [float(r["lr"]) for r in train if r.get("lr")]
    lr_end = lrs[-1] / max(lrs) if lrs and max(lrs) > 0 else None
    summary = {
        "steps": int(train[-1]["step"]) if train else 0,
        # an epoch counts once evaluated (at its end, or where max_steps ended the run); without evaluations
        # the epoch of the last row is all there is to go by
        "epochs": len({r["epoch"] for r in evals}) if evals else (int(rows[-1]["epoch"]) + 1 if rows else 0),
        "cut_off": bool(evals) and rows[-1]["split"] != "eval",  # stopped inside an epoch it never finished
        "wall_seconds": _wall_seconds(rows),
        "train_tokens_per_s": round(float(np.median(tps))) if tps else None,
        "best_eval_step": int(best["step"]) if best else None,
        "best_eval_loss": float(best["loss"]) if best else None,
        "eval_curve": [(int(r["step"]), round(float(r["loss"]), 4)) for r in evals],
        "plateaued": config.patience is not None and bool(evals) and since_gain >= config.patience,
        "evals_since_gain": since_gain,
        "min_delta": config.min_delta,
        # a decaying schedule that reached its floor ran to its end, whatever its length was
        "lr_end_ratio": lr_end,
        "schedule_done": config.min_lr_ratio < 1.0
        and lr_end is not None
        and lr_end <= config.min_lr_ratio + 1e-3,
        "evals_since_best": since_best,
        "stages": [],
    }
    init = request.get("init_from")
    if init and (Path(init).parent / "log.csv").exists():
        earlier = training_summary(Path(init).parent)
        summary["stages"] = [*earlier["stages"], {k: v for k, v in earlier.items() if k != "stages"}]
        if "init_without_log" in earlier:
            summary["init_without_log"] = earlier["init_without_log"]
    elif init:  # e.g. a shipped model fine-tuned further: say so, though its own run cannot be summarised
        summary["init_without_log"] = str(init)
    if request.get("init_fresh"):
        summary["init_fresh"] = {"from": str(init), "tensors": list(request["init_fresh"])}
    return summary


def _stop_line(training: dict[str, Any]) -> str:
    if training["plateaued"] and training.get("min_delta"):
        return (
            f"stopped when the validation loss stopped improving by more than {training['min_delta']} per "
            f"evaluation (best at step {training['best_eval_step']}; none of the last "
            f"{training['evals_since_gain']} evaluations gained more than that)"
        )
    if training["plateaued"]:
        return (
            f"stopped when the validation loss stopped improving (best at step {training['best_eval_step']}, "
            f"no better loss in the {training['evals_since_best']} evaluations after it)"
        )
    if training["schedule_done"]:
        curve = training["eval_curve"]
        last = (
            f"; the last evaluation changed the loss by {curve[-1][1] - curve[-2][1]:+.4f}"
            if len(curve) > 1
            else ""
        )
        return (
            f"ran its whole learning-rate schedule, down to {training['lr_end_ratio']:.0%} of the peak (best at "
            f"step {training['best_eval_step']}, {training['evals_since_best']} evaluations after it{last})"
        )
    return (
        f"stopped by its time or step budget before the validation loss plateaued (best at step "
        f"{training['best_eval_step']}, {training['evals_since_best']} evaluations after it): more "
        "training would likely still help"
    )


TRAIN_FLAGS = {
    "max_steps": "max-steps",
    "epochs": "epochs",
    "batch_size": "batch-size",
    "lr": "lr",
    "patience": "patience",
    "min_delta": "min-delta",
    "checkpoint_every": "checkpoint-every",
    "seed": "seed",
    "num_workers": "loader-workers",
    "precision": "precision",
}  # TrainConfig field -> `museforge train` option


def train_command(request: dict[str, Any]) -> str:
    """The `museforge train` command line that a run.json records."""
    flags = {
        "model": request["model"],
        "preset": request["preset"],
        "data": request["data_dir"],
        "transpose": request.get("max_shift", 6),
    }
    for key, value in request.get("train_overrides", {}).items():
        if key in TRAIN_FLAGS:  # the rest (e.g. progress) are the Python API's, not the command line's
            flags[TRAIN_FLAGS[key]] = value
    if request.get("init_from"):
        flags["init"] = request["init_from"]
    if request.get("model_overrides"):
        flags["model-config"] = f"'{json.dumps(request['model_overrides'])}'"
    return "museforge train " + " ".join(f"--{k} {v}" for k, v in flags.items())


def _styles_for_samples(data_dir: Path, known: tuple[str, ...], n: int) -> list[str | None]:
    """Styles of the samples in proportion to the training data (at least one of each style it knows)."""
    if not known:
        return [None] * n
    counts = Counter(r.style for r in load_manifest(data_dir, "train") if r.style in known)
    styles = sorted(counts, key=lambda s: -counts[s])
    total = sum(counts.values())
    plan = [s for s in styles for _ in range(max(1, round(n * counts[s] / total)))]
    return plan[:n] if len(plan) >= n else plan + styles[: n - len(plan)]


def ship_model(
    run_dir: Path, data_dir: Path, models_root: Path, options: ShipOptions, log: Log = print
) -> Path:
    """Copy ``run_dir/best`` to ``models_root/<name>`` with ``originality.npz`` and a measured model card.

    The folder is assembled beside its destination and renamed into place, so a half-shipped model is never
    visible to `museforge models list` or the web app.
    """
    best = run_dir / "best"
    ckpt = load_checkpoint(best)
    models_root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=models_root, prefix=f".{options.name}."))
    try:
        for name in CHECKPOINT_FILES:
            shutil.copy2(best / name, staging / name)

        log("indexing the training split for originality checks")
        train_paths = [r.midi_path(data_dir) for r in load_manifest(data_dir, "train")]
        index, _ = OriginalityIndex.from_files(train_paths, source=f"{data_dir.name}:train")
        index.save(staging / "originality.npz")

        family = get_family(ckpt.model_name)
        measures = family.card_measures(ckpt, run_dir, data_dir, options, log)
        if measures is None:
            log("scoring the test split")
            measures = CardMeasures(heldout_likelihood(staging, data_dir, options.max_test_pieces), [])
        for name, content in measures.files.items():
            (staging / "evaluation").mkdir(exist_ok=True)
            (staging / "evaluation" / name).write_text(json.dumps(content, indent=2) + "\n")

        evaluation, sampling = sample_and_evaluate(staging, data_dir, index, options, log=log)

        if not options.command and (run_dir / "run.json").exists():
            options.command = train_command(json.loads((run_dir / "run.json").read_text()))
        card = render_card(
            options,
            family.name,
            ckpt.config.to_dict(),
            ckpt.tokenizer,
            dataset_stats(data_dir),
            training_summary(run_dir),
            measures,
            evaluation.report,
            sampling=sampling,
            parameters=sum(p.numel() for p in ckpt.model.parameters()),
        )
        (staging / CARD_FILE).write_text(card, encoding="utf-8")
        for path in [
            staging,
            *staging.rglob("*"),
        ]:  # mkdtemp/mkstemp make owner-only modes; a model is shared
            path.chmod(0o755 if path.is_dir() else 0o644)
        dest = models_root / options.name
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
        return dest
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def sample_and_evaluate(
    model_dir: Path,
    data_dir: Path,
    index: OriginalityIndex,
    options: ShipOptions,
    precision: str = "fp32",
    log: Log = print,
) -> tuple[Any, dict[str, Any]]:
    """Sample ``options.n_samples`` pieces from the checkpoint in ``model_dir`` (styles in proportion to the
    training data, seeds ``options.seed + i``), evaluate them against the test split into
    ``model_dir/evaluation``, and return the evaluation and the sampling speed for the card."""
    log(f"sampling {options.n_samples} pieces")
    loaded = get_model(model_dir, precision=precision)
    family = family_of(loaded)
    rolls = isinstance(loaded.tokenizer, PianoRollTokenizer)  # a GAN writes whole phrases, not tokens
    length = family.length(options.bars, options.seconds)
    samples_dir = Path(tempfile.mkdtemp(prefix="museforge-samples-"))
    try:
        sampled_tokens, sampled_bars, sample_seconds = 0, 0, 0.0
        for i, style in enumerate(_styles_for_samples(data_dir, loaded.styles, options.n_samples)):
            song = generate_song(
                loaded, style=style, seed=options.seed + i, originality_index=index, **length
            )[0]
            song.save_midi(samples_dir / f"sample-{i:03d}.mid")
            sampled_tokens += song.new_tokens
            sampled_bars += options.bars
            sample_seconds += song.seconds
        log("evaluating the samples against the test split")
        layout = loaded.tokenizer.config if rolls else None  # piano rolls are measured in their own tracks
        evaluation = evaluate_folder(
            samples_dir, f"{data_dir}:test", model_dir / "evaluation", index=index, roll_config=layout
        )
    finally:
        shutil.rmtree(samples_dir, ignore_errors=True)
    for heavy in (model_dir / "evaluation").glob("*.png"):  # the HTML embeds the plots already
        heavy.unlink()
    sampling = {
        "rate": round((sampled_bars if rolls else sampled_tokens) / max(sample_seconds, 1e-9), 1),
        "unit": "bars/s" if rolls else "tokens/s",
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
        "precision": loaded.sampler(1)[1],
        "settings": family.sampling_summary(family.resolve(family.parse(length), model_info(model_dir))),
        "decoding": family.decoding_state,
    }
    return evaluation, sampling


def resample_card(
    model_dir: Path, data_dir: Path, options: ShipOptions, precision: str = "auto", log: Log = print
) -> Path:
    """Re-measure a shipped model's samples, as `museforge models ship` does, without its training run: new
    samples (drawn as the app and CLI draw them, at ``precision``) against the test split of ``data_dir``.
    The card's "Samples against held-out music" and "Sampling speed" sections and ``evaluation/`` are
    replaced; everything else in the card stays as written. For a sampling change (e.g. the context a model
    slides in) whose effect the card should show."""
    card_path = model_dir / CARD_FILE
    card = card_path.read_text(encoding="utf-8")
    loaded = get_model(model_dir)
    family = family_of(loaded)
    own = [family.card_heading] if family.card_heading else []
    for heading in (SAMPLES_HEADING, SPEED_HEADING, CONFIG_HEADING, *own):
        if f"\n{heading}\n" not in card:
            raise ValueError(f"{card_path} has no {heading!r} section to replace")
    stamp = (
        f"Re-measured {time.strftime('%Y-%m-%d')} by `museforge models resample` against the test split of "
        f"`{data_dir.name}`."
    )
    if family.card_heading:  # a section of its own that sampling changes (e.g. MuseMorphose's transfers)
        served = get_model(model_dir, precision=precision)
        lines = family.card_remeasure(model_dir, loaded, served, data_dir, options, log)
        lines[1:1] = [stamp, ""]
        card = _replace_sections(card, family.card_heading, SAMPLES_HEADING, lines)
    index = OriginalityIndex.load(model_dir / ORIGINALITY_FILE)
    evaluation, sampling = sample_and_evaluate(model_dir, data_dir, index, options, precision, log)
    fresh = _samples_lines(options, evaluation.report, sampling)
    fresh[1:1] = [stamp, ""]
    card = _replace_sections(card, SAMPLES_HEADING, CONFIG_HEADING, fresh)
    tmp = card_path.with_suffix(".md.tmp")
    tmp.write_text(card, encoding="utf-8")
    tmp.replace(card_path)
    return card_path


def _replace_sections(card: str, first: str, stop: str, lines: list[str]) -> str:
    """``card`` with everything from heading ``first`` up to heading ``stop`` replaced by ``lines``."""
    before, rest = card.split(f"\n{first}\n", 1)
    if f"\n{stop}\n" not in rest:
        raise ValueError(f"the card has no {stop!r} section after {first!r}")
    after = rest.split(f"\n{stop}\n", 1)[1]
    return f"{before}\n" + "\n".join(lines).rstrip("\n") + f"\n\n{stop}\n{after}"


def _likelihood_lines(likelihood: dict[str, Any], training: dict[str, Any]) -> list[str]:
    of = likelihood.get("split_pieces", likelihood["n_sequences"])
    sample = "" if of == likelihood["n_sequences"] else f" (a seeded random sample of {of})"
    lines = [
        "## Held-out likelihood",
        f"Test split, {likelihood['n_sequences']} {likelihood.get('unit', 'pieces')}{sample}, "
        f"{likelihood['n_tokens']} tokens: "
        f"NLL {fmt(likelihood['nll'])} nats/token, perplexity {fmt(likelihood['perplexity'], 2)} "
        f"(validation NLL at the best step: {fmt(training['best_eval_loss'])}).",
    ]
    if likelihood.get("context"):
        lines[-1] += f" Context: {likelihood['context']} tokens, the training window."
    if likelihood.get("by_style"):
        lines += ["", "| style | pieces | tokens | NLL |", "|---|---|---|---|"]
        lines += [
            f"| {style} | {r['n_sequences']} | {r['n_tokens']} | {fmt(r['nll'])} |"
            for style, r in likelihood["by_style"].items()
        ]
    return [*lines, ""]


def _epochs(training: dict[str, Any]) -> str:
    """The epochs a run trained: "6 epochs", or "6 epochs and part of epoch 7" where it stopped inside an epoch
    it never evaluated (killed, say)."""
    n = training["epochs"]
    text = f"{n} epoch{'' if n == 1 else 's'}"
    return f"{text} and part of epoch {n + 1}" if training.get("cut_off") else text


def _samples_lines(options: ShipOptions, report: dict[str, Any], sampling: dict[str, Any]) -> list[str]:
    """The card's "Samples against held-out music" and "Sampling speed" sections."""
    lines = [
        SAMPLES_HEADING,
        f"{options.n_samples} samples ({sampling['settings']}, styles in proportion to the training "
        "data) compared with the test split by `museforge evaluate` (full report in `evaluation/report.html`).",
        "",
        f"- MGEval overall overlap {fmt(report['overall']['overlap'])}, KL {fmt(report['overall']['kl'])}",
    ]
    if "originality" in report:
        gen = report["originality"]["generated"]["summary"]
        lines.append(
            f"- Originality: {gen['near_copy_share']:.0%} of samples flagged as near-copies of training pieces; "
            f"longest copied run {gen['longest_run_max']} notes (mean {fmt(gen.get('longest_run_mean'), 1)})"
        )
    lines += ["", "| metric | samples (mean ± std) | test split (mean ± std) |", "|---|---|---|"]
    for name, row in sorted(report.get("metrics", {}).items()):
        g, r = row.get("generated", {}), row.get("reference", {})
        lines.append(
            f"| {name} | {fmt(g.get('mean'))} ± {fmt(g.get('std'))} | "
            f"{fmt(r.get('mean'))} ± {fmt(r.get('std'))} |"
        )
    weights = f", {sampling['precision']} weights" if sampling.get("precision", "fp32") != "fp32" else ""
    return [
        *lines,
        "",
        SPEED_HEADING,
        f"{sampling['rate']} {sampling['unit']} while writing the samples ({sampling['machine']}, batch 1"
        f"{sampling['decoding']}{weights}).",
        "",
    ]


def render_card(
    options: ShipOptions,
    family: str,
    config: dict[str, Any],
    tokenizer: dict[str, Any],
    data: dict[str, Any],
    training: dict[str, Any],
    measures: CardMeasures,
    report: dict[str, Any],
    sampling: dict[str, Any],
    parameters: int,
) -> str:
    """The model card as Markdown; its first line is the one-line description. ``measures`` holds the
    held-out likelihood (None for a family without one) and the family's own sections."""
    styles = ", ".join(f"{k} {v['pieces']}" for k, v in sorted(data["styles"].items()))
    lines = [
        options.description,
        "",
        f"# {options.name}",
        "",
        f"Family `{family}`, {parameters / 1e6:.2f} M parameters, tokenizer `{tokenizer['name']}`. "
        f"Card written {time.strftime('%Y-%m-%d')} by `museforge models ship`.",
        "",
        "## Data",
        f"The music21 corpus as built by `museforge data build --source music21`: {data['pieces']} pieces "
        f"({data['hours']:.1f} h; splits {json.dumps(data['splits'], sort_keys=True)}). Styles: {styles}. "
        "Training windows are transposed at random by up to ±6 semitones.",
        "",
        "## Training",
        f"- Hardware: {options.hardware}",
        f"- Command: `{options.command}`",
        *(
            [
                f"- Started from the weights of `{training['init_without_log']}`, whose training log is not "
                "beside it: the steps and minutes below count only the stages listed here"
            ]
            if training.get("init_without_log")
            else []
        ),
        *[
            f"- Stage {i + 1}: {st['steps']} optimizer steps, {_epochs(st)}, {st['wall_seconds'] / 60:.1f} "
            f"min; {_stop_line(st)}; the next stage started from its best weights with a fresh optimizer"
            for i, st in enumerate(training["stages"])
        ],
        *(
            [
                f"- The weights that the model overrides add ({len(training['init_fresh']['tensors'])} tensors, "
                f"e.g. `{training['init_fresh']['tensors'][0]}`) started fresh; all others came from "
                f"`{training['init_fresh']['from']}`"
            ]
            if training.get("init_fresh")
            else []
        ),
        f"- {'Final stage' if training['stages'] else 'Run'}: {training['steps']} optimizer steps, "
        f"{_epochs(training)}, {training['wall_seconds'] / 60:.1f} min, median "
        f"{fmt(training['train_tokens_per_s'])} training tokens/s; {_stop_line(training)}",
        f"- Validation loss by evaluation (step, {measures.loss_unit}): {training['eval_curve']}",
        "",
        *(_likelihood_lines(measures.likelihood, training) if measures.likelihood is not None else []),
        *measures.lines,
        *_samples_lines(options, report, sampling),
        CONFIG_HEADING,
        "```json",
        json.dumps(config, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)
