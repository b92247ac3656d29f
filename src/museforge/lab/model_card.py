"""Shipping a trained run as a museforge model: its best checkpoint, an originality index of its training data,
and a model card with what a user needs to judge it — data, config, training, held-out NLL, and the metrics
of its samples against held-out real music.

Everything in the card is measured here, from the run folder and the dataset; nothing is typed in by hand
except the hardware the run trained on.
"""

from __future__ import annotations

import csv
import json
import math
import platform
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from museforge.data.dataset import TokenCache
from museforge.data.manifest import load_manifest
from museforge.data.stats import dataset_stats
from museforge.defaults import DEFAULT_GUIDANCE
from museforge.families import family_of, get_family, load_checkpoint
from museforge.families.loaded import LoadedModel
from museforge.families.musegan.gan import musegan_tables
from museforge.families.musegan.model import MuseGAN
from museforge.families.musemorphose.decode import (
    KEPT_CLASS_WEIGHT,
    decoded_rows,
    encode_piece,
    transfer,
)
from museforge.families.musemorphose.model import MuseMorphose
from museforge.families.performance.model import controls_for_events
from museforge.families.scoring import ModelScorer
from museforge.families.serving import generate_song, get_model
from museforge.lab.musemorphose_eval import PAPER, SHIFTS, evaluate_transfer, reconstruction_nll
from museforge.metrics.evaluate import evaluate_folder
from museforge.metrics.likelihood import evaluate_likelihood
from museforge.metrics.originality import OriginalityIndex
from museforge.models.checkpoint import Checkpoint
from museforge.models.zoo import CARD_FILE, ORIGINALITY_FILE, model_info
from museforge.tokenizers import PerformanceTokenizer
from museforge.tokenizers.pianoroll import PianoRollTokenizer
from museforge.tokenizers.remi import RemiTokenizer
from museforge.training.trainer import TrainConfig, counts_as_gain

CHECKPOINT_FILES = ("model.safetensors", "config.json", "tokenizer.json")
# card sections that `resample_card` rewrites in place, found by their headings
CONTROL_HEADING = "## Attribute control and fidelity (style transfer)"
SAMPLES_HEADING = "## Samples against held-out music"
SPEED_HEADING = "## Sampling speed"
CONFIG_HEADING = "## Config"
Log = Callable[[str], None]


@dataclass
class ShipOptions:
    name: str
    description: str  # the card's first line, for a musician: what `museforge models list` and the app show
    hardware: str  # where the run trained, e.g. "1× NVIDIA H100 (lent machine)"
    command: str = ""  # how the run was started; default: rebuilt from the run's run.json
    n_samples: int = 40  # generated pieces evaluated against the test split
    bars: int = 16  # length of each REMI or MuseGAN sample
    gan_bars: int = 20_000  # generated bars in a MuseGAN's metric table (as in the paper)
    seconds: float = 30.0  # length of each performance sample
    max_test_pieces: int = 300  # held-out pieces scored for NLL (MuseMorphose: segments)
    transfer_pieces: int = 100  # MuseMorphose: test pieces transferred per shift for control ρ / fidelity
    candidates: int = 8  # MuseMorphose: tries per bar of the card's last control measurement (1: none)
    guidance: float = DEFAULT_GUIDANCE  # MuseMorphose: guidance of the card's assisted measurements (0: none)
    seed: int = 0


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


def _controls_fn(tokenizer: PerformanceTokenizer) -> Callable[[np.ndarray], torch.Tensor]:
    def controls(ids: np.ndarray) -> torch.Tensor:
        return controls_for_events(tokenizer.event_times(ids), tokenizer.onset_pitches(ids))

    return controls


def heldout_likelihood(
    checkpoint_dir: Path,
    data_dir: Path,
    max_pieces: int,
    *,
    split: str = "test",
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Per-token NLL and perplexity of a checkpoint on a split, overall and per style, through the metrics'
    likelihood interface.

    Past ``max_pieces`` a seeded random sample is scored: the split's first pieces come from the first
    collections built (chorales before folk songs), so taking them would weigh the styles unlike the split.
    """
    ckpt = load_checkpoint(checkpoint_dir, device)
    tok_name = ckpt.tokenizer["name"]
    cache = TokenCache(data_dir, tok_name, split)
    if len(cache) == 0:
        raise ValueError(f"{data_dir} has no {split} pieces tokenized with {tok_name}")
    tokenizer = cache.tokenizer()
    controls = _controls_fn(tokenizer) if isinstance(tokenizer, PerformanceTokenizer) else None
    scorer = ModelScorer(ckpt.model, controls)
    chosen = range(len(cache))
    if len(cache) > max_pieces:
        chosen = sorted(
            np.random.default_rng(seed).choice(len(cache), size=max_pieces, replace=False).tolist()
        )
    by_style: dict[str, list[int]] = {}
    for i in chosen:
        by_style.setdefault(str(cache.pieces[i].get("style")), []).append(i)
    styles = {
        style: evaluate_likelihood(scorer, [cache.piece(i) for i in pieces]).to_dict()
        for style, pieces in sorted(by_style.items())
    }
    n_tokens = sum(r["n_tokens"] for r in styles.values())
    nll = sum(r["nll"] * r["n_tokens"] for r in styles.values()) / n_tokens if n_tokens else math.nan
    return {
        "nll": nll,
        "perplexity": math.exp(nll) if n_tokens else math.nan,
        "n_tokens": n_tokens,
        "n_sequences": len(chosen),
        "split_pieces": len(cache),
        "context": getattr(ckpt.model.config, "max_seq_len", None),
        "by_style": styles,
    }


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

        is_gan = isinstance(ckpt.model, MuseGAN)
        likelihood, gan_tables, morph = None, None, None
        if isinstance(ckpt.model, MuseMorphose):  # a VAE: reconstruction NLL, and its transfer measures
            log("MuseMorphose: reconstruction NLL, attribute control and fidelity on the test split")
            morph = _musemorphose_evaluation(ckpt, data_dir, options, log)
            likelihood = morph["likelihood"]
            (staging / "evaluation").mkdir(exist_ok=True)
            (staging / "evaluation" / "transfer.json").write_text(json.dumps(morph, indent=2) + "\n")
        elif is_gan:  # a GAN has no likelihood: MuseGAN's metric table against the training data instead
            log(f"MuseGAN metrics of {options.gan_bars} generated bars and of the training data")
            gan_tables = _musegan_tables(run_dir, ckpt, data_dir, options)
        else:
            log("scoring the test split")
            likelihood = heldout_likelihood(staging, data_dir, options.max_test_pieces)

        evaluation, sampling = sample_and_evaluate(staging, data_dir, index, options, log=log)

        if not options.command and (run_dir / "run.json").exists():
            options.command = train_command(json.loads((run_dir / "run.json").read_text()))
        card = render_card(
            options,
            get_family(ckpt.model_name).name,
            ckpt.config.to_dict(),
            ckpt.tokenizer,
            dataset_stats(data_dir),
            training_summary(run_dir),
            likelihood,
            evaluation.report,
            sampling=sampling,
            parameters=sum(p.numel() for p in ckpt.model.parameters()),
            musegan=gan_tables,
            musemorphose=morph,
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
    is_gan = isinstance(loaded.checkpoint.model, MuseGAN)
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
        layout = loaded.tokenizer.config if is_gan else None  # a MuseGAN's table in its own tracks
        evaluation = evaluate_folder(
            samples_dir, f"{data_dir}:test", model_dir / "evaluation", index=index, roll_config=layout
        )
    finally:
        shutil.rmtree(samples_dir, ignore_errors=True)
    for heavy in (model_dir / "evaluation").glob("*.png"):  # the HTML embeds the plots already
        heavy.unlink()
    sampling = {
        # a GAN writes whole phrases, not tokens: its speed is in bars
        "rate": round((sampled_bars if is_gan else sampled_tokens) / max(sample_seconds, 1e-9), 1),
        "unit": "bars/s" if is_gan else "tokens/s",
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
    morph = isinstance(loaded.checkpoint.model, MuseMorphose)
    for heading in (SAMPLES_HEADING, SPEED_HEADING, CONFIG_HEADING, *([CONTROL_HEADING] if morph else [])):
        if f"\n{heading}\n" not in card:
            raise ValueError(f"{card_path} has no {heading!r} section to replace")
    stamp = (
        f"Re-measured {time.strftime('%Y-%m-%d')} by `museforge models resample` against the test split of "
        f"`{data_dir.name}`."
    )
    if morph:  # its control and transfer speed come from sampling too
        log(f"MuseMorphose: attribute control and fidelity of {options.transfer_pieces} test pieces")
        model, tok = loaded.checkpoint.model, loaded.tokenizer
        assert isinstance(model, MuseMorphose) and isinstance(tok, RemiTokenizer)
        measured = json.loads((model_dir / "evaluation" / "transfer.json").read_text())
        for stale in ("control_candidates", "transfer_16_bars_candidates_seconds", "assisted"):
            measured.pop(stale, None)
        served = get_model(model_dir, precision=precision)
        measured.update(_musemorphose_control(model, tok, data_dir, options, log, served))
        lines = _musemorphose_lines(measured)
        lines[1:1] = [stamp, ""]
        card = _replace_sections(card, CONTROL_HEADING, SAMPLES_HEADING, lines)
        (model_dir / "evaluation" / "transfer.json").write_text(json.dumps(measured, indent=2) + "\n")
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


def _musegan_tables(run_dir: Path, ckpt: Checkpoint, data_dir: Path, options: ShipOptions) -> dict[str, Any]:
    """`musegan_tables` with the phrase filters the run trained with (its recipe and model overrides)."""
    request = json.loads((run_dir / "run.json").read_text())
    filters = {
        **get_family(request["model"]).recipe(request["preset"]).model,
        **request.get("model_overrides", {}),
    }
    tokenizer = PianoRollTokenizer.from_state_dict(ckpt.tokenizer)
    assert isinstance(ckpt.model, MuseGAN) and isinstance(tokenizer, PianoRollTokenizer)
    return musegan_tables(ckpt.model, tokenizer, data_dir, filters, bars=options.gan_bars, seed=options.seed)


def _musemorphose_evaluation(
    ckpt: Checkpoint, data_dir: Path, options: ShipOptions, log: Log
) -> dict[str, Any]:
    """Test-split reconstruction NLL and `_musemorphose_control`."""
    model, tok = ckpt.model, RemiTokenizer.from_state_dict(ckpt.tokenizer)
    assert isinstance(model, MuseMorphose)
    nll = reconstruction_nll(model, tok, data_dir, "test", max_segments=options.max_test_pieces)
    unit = f"{model.config.n_bars}-bar segments (reconstruction, z = posterior mean)"
    likelihood = {"n_sequences": nll["n_segments"], "unit": unit, **nll}
    return {"likelihood": likelihood, **_musemorphose_control(model, tok, data_dir, options, log)}


def _musemorphose_control(
    model: MuseMorphose,
    tok: RemiTokenizer,
    data_dir: Path,
    options: ShipOptions,
    log: Log,
    served: LoadedModel | None = None,
) -> dict[str, Any]:
    """Control ρ / leak / fidelity of ``options.transfer_pieces`` test pieces drawn at random, and the seconds a
    16-bar transfer takes here (mean of three pieces): first the model alone (one sample per bar, no guidance,
    as the paper samples), then under ``assisted``, the sampling settings that help it (guidance, then guidance
    with ``options.candidates`` tries per bar), each ``{"candidates", "guidance", "control", "seconds",
    "precision", "kept_class_weight"}`` (the weight `choose_candidate` gave a kept class's miss). The
    transfers are timed with ``served``'s sampler (the precision the app and CLI use) when given."""
    records = load_manifest(data_dir, "test")
    order = np.random.default_rng(options.seed).permutation(len(records))
    pieces = [records[i].midi_path(data_dir) for i in order[: options.transfer_pieces]]
    long = []  # the first three pieces of >= 16 bars, cut to 16 bars
    for i in order:
        encoded = encode_piece(model, tok, records[i].midi_path(data_dir))
        if encoded.n_bars >= 16:
            long.append(tok.decode(encoded.head(16).ids))
        if len(long) == 3:
            break

    def timed_model(rows: int) -> tuple[MuseMorphose, str]:
        if served is None:
            return model, "fp32"
        sampler, precision = served.sampler(rows)
        assert isinstance(sampler, MuseMorphose)
        return sampler, precision

    def transfer_seconds(candidates: int, guidance: float) -> float | None:
        seconds = []
        timed = timed_model(decoded_rows(candidates, guidance))[0]
        for piece in long:  # every bar re-generated
            start = time.perf_counter()
            transfer(timed, tok, piece, rhythm=1, seed=options.seed, candidates=candidates, guidance=guidance)
            seconds.append(time.perf_counter() - start)
        return float(np.mean(seconds)) if seconds else None

    def control(candidates: int, guidance: float) -> dict[str, Any]:
        log(
            f"control: {len(pieces)} pieces x {len(SHIFTS)} shifts x 2 attributes, {candidates} tries per bar, "
            f"guidance {guidance}"
        )
        every = max(1, len(pieces) // 10)

        def progress(done: int, total: int) -> None:
            if done % every == 0 or done == total:
                log(f"  {done}/{total} pieces")

        return evaluate_transfer(
            model, tok, pieces, seed=options.seed, candidates=candidates, guidance=guidance, progress=progress
        )

    settings = []
    if options.guidance > 0:
        settings.append((1, options.guidance))
    if options.candidates > 1:
        settings.append((options.candidates, options.guidance))
    return {
        "control": control(1, 0.0),
        "paper": PAPER,
        "transfer_16_bars_seconds": transfer_seconds(1, 0.0),
        "precision": timed_model(1)[1],
        "assisted": [
            {
                "candidates": c, "guidance": g, "control": control(c, g), "seconds": transfer_seconds(c, g),
                "precision": timed_model(decoded_rows(c, g))[1], "kept_class_weight": KEPT_CLASS_WEIGHT,
            }
            for c, g in settings
        ],
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} torch threads",
    }  # fmt: skip


def _setting_label(candidates: int, guidance: float) -> str:
    parts = [
        f"guidance {guidance:g}" if guidance else "",
        f"best of {candidates} per bar" if candidates > 1 else "",
    ]
    return " + ".join(p for p in parts if p) or "one sample per bar"


def _musemorphose_lines(section: dict[str, Any]) -> list[str]:
    c, p = section["control"], section["paper"]
    assisted = section.get("assisted", [])
    runs = [
        ("one sample per bar", c),
        *[(_setting_label(a["candidates"], a["guidance"]), a["control"]) for a in assisted],
    ]
    inherent = c.get("leak_inherent")
    lines = [
        CONTROL_HEADING,
        f"{c['pieces']} test pieces drawn at random, their first {c['bars']} bars transferred with all bars shifted "
        f"by {c['shifts'][0]:+d}..{c['shifts'][-1]:+d} classes of one attribute (the paper's protocol; "
        f"{c['transfers']} transfers, {c['seconds_per_transfer']:.2f} s each in batches of {len(c['shifts'])}). "
        "ρ: Spearman between requested and measured class per bar; leak: ρ between the requested class and the "
        "other attribute's measured class; fidelity: per-bar similarity to the input (1 = identical).",
        "",
    ]
    if inherent:
        lines += [
            "On this music the two attributes are correlated bar by bar (busier bars hold fewer notes at once), so "
            "even a model that played exactly the requested classes would show a leak: the requested classes' "
            f"own, {_fmt(inherent['rhythm'])} (rhythm) and {_fmt(inherent['polyphony'])} (polyphony). The excess "
            "leak is the leak beyond that, what the model adds (0 for exact control); on the paper's Pop1K7 the "
            "two coincide.",
            "",
        ]
    if assisted:
        lines += [
            "Measured with one sample per bar (the model alone, as the paper samples), then with "
            + " and with ".join(_setting_label(a["candidates"], a["guidance"]) for a in assisted)
            + ". Guidance (`--guidance`) amplifies the asked change against the piece's own classes, as "
            "classifier-free guidance does; best of N (`--candidates`) samples each bar N times and keeps the try "
            "whose measured classes are nearest the asked ones"
            + "".join(
                f" (in the best of {a['candidates']}, a miss on the attribute asked to stay counts "
                f"{a['kept_class_weight']:g} times)"
                for a in assisted
                if a["candidates"] > 1 and a.get("kept_class_weight", 1.0) != 1.0
            )
            + ".",
            "",
        ]
    lines += [
        "| attribute | sampling | ρ (ours) | ρ (paper) | leak (ours) | excess leak | leak (paper) | chroma sim. "
        "| groove sim. |",
        "|---|---|---|---|---|---|---|---|---|",
        *[
            f"| {a} | {label} | {_fmt(r['rho'][a])} | {p['rho'][a]} | {_fmt(r['leak'][a])} | "
            f"{_fmt(r.get('leak_excess', {}).get(a))} | {p['leak'][a]} | "
            f"{_fmt(r['fidelity'][a]['chroma'])} | {_fmt(r['fidelity'][a]['groove'])} |"
            for a in ("rhythm", "polyphony")
            for label, r in runs
        ],
        "",
        "The paper's numbers are on Pop1K7 piano with its full-size model trained 150k steps; this model is far "
        "smaller and under-trained (see Training), and the music21 corpus is mostly monophonic, so polyphony "
        "classes are hard to move. Full numbers: `evaluation/transfer.json`.",
        "",
        "## Transfer speed",
        "Style transfer of a 16-bar piece (all bars re-generated), at the precision the app samples that many "
        "rows in: "
        + ", ".join(
            [
                f"{_fmt(section['transfer_16_bars_seconds'], 1)} s with one sample per bar "
                f"({section.get('precision', 'fp32')})",
                *[
                    f"{_fmt(a['seconds'], 1)} s with {_setting_label(a['candidates'], a['guidance'])} "
                    f"({a.get('precision', 'fp32')})"
                    for a in assisted
                ],
            ]
        )
        + f" ({section['machine']}).",
        "",
    ]
    return lines


def _likelihood_lines(likelihood: dict[str, Any], training: dict[str, Any]) -> list[str]:
    of = likelihood.get("split_pieces", likelihood["n_sequences"])
    sample = "" if of == likelihood["n_sequences"] else f" (a seeded random sample of {of})"
    lines = [
        "## Held-out likelihood",
        f"Test split, {likelihood['n_sequences']} {likelihood.get('unit', 'pieces')}{sample}, "
        f"{likelihood['n_tokens']} tokens: "
        f"NLL {_fmt(likelihood['nll'])} nats/token, perplexity {_fmt(likelihood['perplexity'], 2)} "
        f"(validation NLL at the best step: {_fmt(training['best_eval_loss'])}).",
    ]
    if likelihood.get("context"):
        lines[-1] += f" Context: {likelihood['context']} tokens, the training window."
    if likelihood.get("by_style"):
        lines += ["", "| style | pieces | tokens | NLL |", "|---|---|---|---|"]
        lines += [
            f"| {style} | {r['n_sequences']} | {r['n_tokens']} | {_fmt(r['nll'])} |"
            for style, r in likelihood["by_style"].items()
        ]
    return [*lines, ""]


def _epochs(training: dict[str, Any]) -> str:
    """The epochs a run trained: "6 epochs", or "6 epochs and part of epoch 7" where it stopped inside an epoch
    it never evaluated (killed, say)."""
    n = training["epochs"]
    text = f"{n} epoch{'' if n == 1 else 's'}"
    return f"{text} and part of epoch {n + 1}" if training.get("cut_off") else text


def _musegan_lines(section: dict[str, Any]) -> list[str]:
    """MuseGAN's Table 1 layout: one row per set, one column per metric and track."""
    columns = [(m, k) for m in ("EB", "UPC", "QN", "DP", "TD") for k in section["training"].get(m, {})]
    unit = {"EB": " %", "QN": " %", "DP": " %"}
    lines = [
        f"## MuseGAN metrics: {section['generated_bars']} generated bars vs {section['training_bars']} training bars",
        "EB empty bars, UPC used pitch classes per bar, QN notes no shorter than a 32nd note (the paper's "
        f"qualified notes: {section['qn_min_steps']} steps here), DP drum onsets on the 16th grid, TD tonal distance "
        f"between tracks. Gap (mean relative error of EB/UPC/QN): {_fmt(section['gap'])}.",
        "",
        "| set | " + " | ".join(f"{m} {k}{unit.get(m, '')}" for m, k in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for label, key in (("training data", "training"), ("generated", "generated")):
        cells = [_fmt(section[key].get(m, {}).get(k), 2) for m, k in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _fmt(value: Any, digits: int = 3) -> str:
    if isinstance(value, float):
        return "n/a" if value != value else f"{value:.{digits}f}"
    return "n/a" if value is None else str(value)


def _samples_lines(options: ShipOptions, report: dict[str, Any], sampling: dict[str, Any]) -> list[str]:
    """The card's "Samples against held-out music" and "Sampling speed" sections."""
    lines = [
        SAMPLES_HEADING,
        f"{options.n_samples} samples ({sampling['settings']}, styles in proportion to the training "
        "data) compared with the test split by `museforge evaluate` (full report in `evaluation/report.html`).",
        "",
        f"- MGEval overall overlap {_fmt(report['overall']['overlap'])}, KL {_fmt(report['overall']['kl'])}",
    ]
    if "originality" in report:
        gen = report["originality"]["generated"]["summary"]
        lines.append(
            f"- Originality: {gen['near_copy_share']:.0%} of samples flagged as near-copies of training pieces; "
            f"longest copied run {gen['longest_run_max']} notes (mean {_fmt(gen.get('longest_run_mean'), 1)})"
        )
    lines += ["", "| metric | samples (mean ± std) | test split (mean ± std) |", "|---|---|---|"]
    for name, row in sorted(report.get("metrics", {}).items()):
        g, r = row.get("generated", {}), row.get("reference", {})
        lines.append(
            f"| {name} | {_fmt(g.get('mean'))} ± {_fmt(g.get('std'))} | "
            f"{_fmt(r.get('mean'))} ± {_fmt(r.get('std'))} |"
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
    likelihood: dict[str, Any] | None,
    report: dict[str, Any],
    sampling: dict[str, Any],
    parameters: int,
    musegan: dict[str, Any] | None = None,
    musemorphose: dict[str, Any] | None = None,
) -> str:
    """The model card as Markdown; its first line is the one-line description. A GAN has ``musegan`` (its
    `museforge.families.musegan.gan.musegan_tables`) instead of a ``likelihood``."""
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
        f"{_fmt(training['train_tokens_per_s'])} training tokens/s; {_stop_line(training)}",
        f"- Validation loss by evaluation (step, {'MuseGAN-metric gap' if musegan else 'nats/token'}): "
        f"{training['eval_curve']}",
        "",
        *(_likelihood_lines(likelihood, training) if likelihood is not None else []),
        *(_musegan_lines(musegan) if musegan is not None else []),
        *(_musemorphose_lines(musemorphose) if musemorphose is not None else []),
        *_samples_lines(options, report, sampling),
        CONFIG_HEADING,
        "```json",
        json.dumps(config, indent=2, sort_keys=True),
        "```",
        "",
    ]
    return "\n".join(lines)
