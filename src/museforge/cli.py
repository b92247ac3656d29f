"""The `museforge` command line. Thin: it parses options, picks devices and calls the library."""

import contextlib
import inspect
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperGroup

from museforge.cli_show import console, show_models
from museforge.defaults import DEFAULT_GUIDANCE, MAX_GUIDANCE

if TYPE_CHECKING:
    from museforge.families.loaded import LoadedModel


class _LazyCommand(click.Command):
    """A command listed by its one-line help and built only when it is run (see `_Shell`)."""

    def __init__(self, name: str, short_help: str, build: Callable[[], click.Command]) -> None:
        super().__init__(name, short_help=short_help, help=short_help)
        self.build = build


class _Shell(TyperGroup):
    """The top-level group: its lazy commands are built when resolved to run, never to be listed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        lazy = {
            name: _LazyCommand(name, short_help, build) for name, (short_help, build) in LAZY_COMMANDS.items()
        }
        self.commands = {**lazy, **self.commands}  # listed first, as the command people run most

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        if isinstance(cmd, _LazyCommand) and name is not None:
            cmd = self.commands[name] = cmd.build()
        return name, cmd, rest


app = typer.Typer(
    cls=_Shell,
    help="museforge: symbolic music datasets, models, generation and evaluation.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # plain help: typer's rich help imports a Markdown parser, 0.15 s of every --help
)
data_app = typer.Typer(help="Build, tokenize and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
if TYPE_CHECKING:
    from museforge.machine import ThreadChoice

Candidates = Annotated[
    int,
    typer.Option(
        min=1,
        max=16,
        help="MuseMorphose: samples per bar; the one nearest the asked rhythm/polyphony is kept (slower, truer "
        "control).",
    ),
]
Guidance = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=MAX_GUIDANCE,
        help="MuseMorphose transfer: amplify the asked change of classes against the piece's own by this much "
        "(0: the model alone; truer control, a little less like the input, twice the time).",
    ),
]
CardGuidance = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=MAX_GUIDANCE,
        help="MuseMorphose: measure control again with this guidance (0: the model alone only).",
    ),
]
CardCandidates = Annotated[
    int,
    typer.Option(
        min=1,
        max=16,
        help="MuseMorphose: measure control again with this many tries per bar (1: single samples).",
    ),
]
Threads = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Torch threads (default: $MUSEFORGE_THREADS, else the CPUs this process may use that are idle now; "
        "more threads than idle cores make sampling many times slower).",
    ),
]


def _fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def _threads(threads: int | None, share: int = 1) -> "ThreadChoice":
    """Set torch's thread count once, at the edge, the same way for every command that runs a model."""
    from museforge.machine import use_threads

    try:
        return use_threads(threads, share)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


def _json_object(text: str, option: str) -> dict[str, Any]:
    """An option's JSON object (config overrides); anything else is a ValueError naming the option."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{option} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"{option} must be a JSON object like '{{\"key\": value}}', got {text!r}")
    return value


@data_app.command("build")
def data_build(
    source: Annotated[
        str,
        typer.Option(
            help="'music21' (the corpus inside the music21 package), 'lpd5' "
            "(with PATH), or a folder of MIDI/MusicXML/ABC/kern files."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Dataset folder to create or update.")],
    path: Annotated[Path | None, typer.Argument(help="The LPD-5 folder, with --source lpd5.")] = None,
    collections: Annotated[
        str | None, typer.Option(help="Comma-separated music21 collections (default: all music collections).")
    ] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most N files/tunes per collection.")] = None,
    style: Annotated[str, typer.Option(help="Style label for pieces from a folder.")] = "user",
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: all cores).")] = None,
    valid: Annotated[float, typer.Option(min=0.0, max=0.9, help="Validation share.")] = 0.1,
    test: Annotated[float, typer.Option(min=0.0, max=0.9, help="Test share.")] = 0.1,
    max_file_mb: Annotated[float, typer.Option(min=0.01, help="Reject files larger than this.")] = 32.0,
) -> None:
    """Convert a corpus into a dataset folder: normalized MIDI, a manifest, splits and a rejects report.

    Re-running converts only files that are new or changed; an interrupted build resumes where it stopped.
    """
    from museforge.data.build import BuildInterrupted, BuildOptions, build_dataset
    from museforge.data.corpora import folder_units, lpd5_units, music21_units
    from museforge.data.formats import ReaderLimits

    try:
        if source == "music21":
            names = [c.strip() for c in collections.split(",") if c.strip()] if collections else None
            units = music21_units(names)
        elif source == "lpd5":
            if path is None:
                raise _fail(
                    "--source lpd5 needs the LPD-5 folder: museforge data build --source lpd5 PATH --out DIR"
                )
            units = lpd5_units(path)
        else:
            units = folder_units(Path(source), style=style)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    limits = ReaderLimits(max_file_bytes=int(max_file_mb * 2**20))
    options = BuildOptions(limit=limit, valid=valid, test=test, limits=limits)
    if workers is not None:
        options.workers = workers
    try:
        report = build_dataset(units, out, options)
    except (ValueError, BuildInterrupted) as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"[bold green]built[/] {out}: {report.pieces} pieces "
        f"({report.new_pieces} new, {report.cached} units cached, {report.duplicates} duplicates, "
        f"{report.rejected} rejected) in {report.seconds:.1f} s"
    )
    if report.rejected:
        console.print(f"rejected inputs and reasons: {out / 'rejects.jsonl'}")


@data_app.command("stats")
def data_stats(
    data: Annotated[Path, typer.Argument(help="A dataset folder made by `museforge data build`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Counts per style and split, notes, tokens and durations of a built dataset."""
    from rich.table import Table

    from museforge.data.stats import dataset_stats

    try:
        stats = dataset_stats(data)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        print(json.dumps(stats, indent=2, sort_keys=True))
        return
    table = Table(title=f"{data}: {stats['pieces']} pieces, {stats['hours']:.2f} h, {stats['notes']} notes")
    for column in ("style", "train", "valid", "test", "pieces", "notes", "hours"):
        table.add_column(column, justify="left" if column == "style" else "right")
    for name, row in sorted(stats["styles"].items()):
        table.add_row(
            name,
            *(str(row["splits"].get(s, 0)) for s in ("train", "valid", "test")),
            str(row["pieces"]),
            str(row["notes"]),
            f"{row['hours']:.2f}",
        )
    console.print(table)
    for name, tok in sorted(stats.get("tokens", {}).items()):
        console.print(f"tokens ({name}): " + ", ".join(f"{s} {n}" for s, n in sorted(tok.items())))
    if stats["rejected"]:
        console.print(f"{stats['rejected']} inputs rejected (see {data / 'rejects.jsonl'})")


@data_app.command("tokenize")
def data_tokenize(
    data: Annotated[Path, typer.Option(help="A dataset folder made by `museforge data build`.")],
    tokenizer: Annotated[str, typer.Option(help="remi, performance or pianoroll.")] = "remi",
    config: Annotated[
        str | None, typer.Option(help="Tokenizer config overrides as JSON, e.g. '{\"use_programs\": true}'.")
    ] = None,
    transpose: Annotated[
        str | None,
        typer.Option(
            help="Extra transposed copies of training pieces, e.g. "
            "'-3,-2,-1,1,2,3' (semitones; out-of-range ones skipped)."
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: all cores).")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild even if the cache is up to date.")] = False,
) -> None:
    """Encode every piece into a memory-mapped token cache per split (used by the training datasets)."""
    from museforge.data.dataset import TokenizeOptions, tokenize_dataset

    try:
        overrides = _json_object(config, "--config") if config else None
        shifts = tuple(int(s) for s in transpose.split(",") if s.strip()) if transpose else ()
    except ValueError as exc:
        raise _fail(f"bad --config or --transpose: {exc}") from exc
    options = TokenizeOptions(config=overrides, transpositions=shifts, force=force)
    if workers is not None:
        options.workers = workers
    try:
        report = tokenize_dataset(data, tokenizer, options)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        raise _fail(str(exc)) from exc
    state = "up to date" if report.up_to_date else "written"
    summary = ", ".join(
        f"{s}: {v['pieces']} pieces / {v['tokens']} {'bars' if v['item_shape'] else 'tokens'}"
        for s, v in report.splits.items()
    )
    console.print(f"[bold green]{tokenizer} cache {state}[/] {report.out} ({summary})")
    if report.failed:
        console.print(f"[yellow]{len(report.failed)} pieces failed to encode[/] (listed in index.json)")


@app.command("evaluate")
def evaluate(
    generated: Annotated[Path, typer.Argument(help="Folder of generated (or any) music files to evaluate.")],
    reference: Annotated[
        str, typer.Option(help="Reference set: a built dataset DIR[:split] or a plain folder of music files.")
    ],
    out: Annotated[Path, typer.Option(help="Report folder: report.json, report.html and PNG plots.")],
    style: Annotated[
        str | None, typer.Option(help="Only reference pieces of this style (built datasets).")
    ] = None,
    index: Annotated[
        Path | None,
        typer.Option(
            help="Originality index (`museforge originality index`); default: built from the "
            "reference dataset's train split."
        ),
    ] = None,
    roll_config: Annotated[
        str | None,
        typer.Option(
            help="Track layout of the MuseGAN table as piano-roll config JSON (default: the --model MuseGAN's "
            'own, else LPD-5), e.g. \'{"assign": "order", "tracks": [{"name": "soprano"}, {"name": "alto"}, ...]}\'.'
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="The model that made the music (shipped name or checkpoint folder): a MuseGAN's table uses its "
            "own tracks; a model with attribute controls gets a control-fidelity section."
        ),
    ] = None,
    control_pieces: Annotated[
        int, typer.Option(min=0, help="Pieces --model generates for control fidelity (0: none).")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed of the control-fidelity pieces.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N (for --model).")] = "auto",
) -> None:
    """Compare generated music with a reference set: metrics, MGEval overlap/KL, MuseGAN table for multi-track,
    originality (copied runs and phrases) against the training data and, with --model, control fidelity."""
    from rich.progress import Progress

    from museforge.metrics.evaluate import evaluate_folder
    from museforge.tokenizers.pianoroll import PianoRollConfig, PianoRollTokenizer

    try:
        layout = PianoRollConfig(**json.loads(roll_config)) if roll_config else None
    except (ValueError, TypeError) as exc:
        raise _fail(f"bad --roll-config: {exc}") from exc
    try:
        with Progress(console=console.rich, transient=True) as bar:

            def progress(description: str, total: int) -> Callable[[], None]:
                task = bar.add_task(description, total=total)
                return lambda: bar.advance(task)

            loaded, controls = _evaluated_model(model, device, control_pieces, seed, progress)
            if layout is None and loaded is not None and isinstance(loaded.tokenizer, PianoRollTokenizer):
                layout = loaded.tokenizer.config  # the voices the MuseGAN plays, not LPD-5's instruments
            result = evaluate_folder(
                generated, reference, out, style=style, index=index, progress=progress, roll_config=layout,
                model=None if loaded is None else loaded.name, controls=controls,
            )  # fmt: skip
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    report, paths, gen, ref = result.report, result.paths, result.generated, result.reference
    overall = report["overall"]
    console.print(
        f"[bold green]report written[/] {paths['html']}: {len(gen.paths)} generated vs {len(ref.paths)} reference "
        f"pieces, overlap {overall['overlap']:.3f}, KL {overall['kl']:.3f}"
    )
    if "originality" in report:
        summary = report["originality"]["generated"]["summary"]
        console.print(
            f"originality: {summary['near_copy_share']:.0%} of generated pieces are near-copies, longest copied "
            f"run {summary['longest_run_max']} notes"
        )
    else:
        console.print(
            "originality not checked: the reference is not a built dataset and no --index was given"
        )
    if "controls" in report:
        rho = ", ".join(f"{name} {value:.3f}" for name, value in report["controls"]["rho"].items())
        console.print(f"control fidelity (Spearman ρ, requested vs measured): {rho}")
    elif model is not None and control_pieces:
        console.print(f"no control fidelity: model {report['model']} takes no attribute controls")
    failed = len(gen.failed) + len(ref.failed)
    if failed:
        console.print(f"[yellow]{failed} unreadable files[/] (listed in report.json)")


def _evaluated_model(
    model: str | None, device: str, pieces: int, seed: int, progress: Callable[[str, int], Callable[[], None]]
) -> "tuple[LoadedModel | None, dict[str, Any] | None]":
    """The --model of `evaluate`, loaded, and its control fidelity over ``pieces`` generated pieces (None for a
    model without attribute controls, or none asked for)."""
    if model is None:
        return None, None
    from museforge.families.serving import get_model
    from museforge.lab.control_eval import generation_control, has_controls
    from museforge.training.distributed import select_device

    loaded = get_model(model, select_device(device))
    if not pieces or not has_controls(loaded):
        return loaded, None
    tick = progress(f"generating {pieces} pieces with {loaded.name} for control fidelity", pieces)
    return loaded, generation_control(loaded, pieces=pieces, seed=seed, progress=lambda done, total: tick())


@app.command("score")
def score(
    data: Annotated[Path, typer.Option(help="A built dataset tokenized for the model.")],
    model: Annotated[
        str | None, typer.Option(help="Shipped model name or checkpoint folder (default: the default model).")
    ] = None,
    split: Annotated[str, typer.Option(help="train, valid or test.")] = "test",
    max_pieces: Annotated[
        int,
        typer.Option(
            min=1, help="Score a seeded random sample of this many pieces when the split is larger."
        ),
    ] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    out: Annotated[Path | None, typer.Option(help="Also write the result as JSON here.")] = None,
    threads: Threads = None,
) -> None:
    """Held-out likelihood: per-token NLL and perplexity of a Transformer or Performance RNN on a split, overall
    and per style."""
    from rich.table import Table

    from museforge.data.manifest import SPLITS
    from museforge.families.likelihood import heldout_likelihood
    from museforge.io import atomic_write_json
    from museforge.models.zoo import DEFAULT_MODEL, resolve_model
    from museforge.training.distributed import select_device

    _threads(threads)
    if split not in SPLITS:
        raise _fail(f"--split must be {', '.join(SPLITS[:-1])} or {SPLITS[-1]}, got {split!r}")
    try:
        path = resolve_model(model or DEFAULT_MODEL)
        result = heldout_likelihood(
            path, data, max_pieces, split=split, seed=seed, device=select_device(device)
        )
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    table = Table(
        title=f"{path.name} on {data}:{split} ({result['n_sequences']} of {result['split_pieces']} pieces)"
    )
    for column in ("style", "pieces", "tokens", "NLL", "perplexity"):
        table.add_column(column, justify="left" if column == "style" else "right")
    rows = [*result["by_style"].items(), ("all", result)]
    for style, r in rows:
        table.add_row(
            style, str(r["n_sequences"]), str(r["n_tokens"]), f"{r['nll']:.4f}", f"{r['perplexity']:.3f}"
        )
    console.print(table)
    if out is not None:
        atomic_write_json(out, result)
        console.print(f"written {out}")


originality_app = typer.Typer(help="Check music against its training data for copies.", no_args_is_help=True)
app.add_typer(originality_app, name="originality")
NEAR_COPY_EXIT = 3


@originality_app.command("index")
def originality_index(
    data: Annotated[
        str,
        typer.Option(help="A built dataset DIR[:split] (DIR alone: every piece) or a folder of music files."),
    ],
    out: Annotated[Path, typer.Option(help="Index file to write (.npz).")],
    style: Annotated[str | None, typer.Option(help="Only pieces of this style (built datasets).")] = None,
    n: Annotated[int, typer.Option(min=2, help="Notes per hashed run, minus one.")] = 8,
) -> None:
    """Build an originality index once, for `check`, `evaluate --index`, the generators and the web app."""
    from rich.progress import Progress

    from museforge.metrics.evaluate import reference_files
    from museforge.metrics.originality import OriginalityIndex

    try:
        paths = reference_files(data, style)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    if not paths:
        raise _fail(f"no pieces in {data}" + (f" with style {style!r}" if style else ""))
    with Progress(console=console.rich, transient=True) as progress:
        task = progress.add_task("indexing", total=len(paths))
        built, failed = OriginalityIndex.from_files(
            paths,
            n=n,
            source=data + (f" (style {style})" if style else ""),
            progress=lambda: progress.advance(task),
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    built.save(out)
    console.print(f"[bold green]index written[/] {out}: {built.n_pieces} pieces, {len(built.hashes)} n-grams")
    for path, reason in failed.items():
        console.print(f"[yellow]skipped[/] {path}: {reason}")


@originality_app.command("check")
def originality_check(
    file: Annotated[Path, typer.Argument(help="A music file (MIDI, MusicXML, ABC, kern).")],
    index: Annotated[Path, typer.Option(help="Index file made by `museforge originality index`.")],
) -> None:
    """Longest copied run, copied phrases and notes, and the verdict; exit code 0 = original, 3 = near-copy."""
    from museforge.data.formats import load_score
    from museforge.metrics.originality import OriginalityIndex, check_originality, is_near_copy

    try:
        loaded = OriginalityIndex.load(index)
    except (FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc
    try:
        score = load_score(file)
    except Exception as exc:  # any reader error means the file cannot be judged: say which and why
        raise _fail(f"cannot read {file}: {type(exc).__name__}: {exc}") from exc
    result = check_originality(score, loaded)
    near = is_near_copy(result)
    phrases = f"{result.phrase_share:.0%} of {result.n_phrases}" if result.n_phrases else "none long enough"
    console.print(
        f"{file}: longest copied run {result.longest_run} of {result.n_notes} notes, "
        f"4-bar phrases copied {phrases}, notes in copied runs "
        f"{result.copied_share:.0%} -> " + ("[bold red]near-copy[/]" if near else "[bold green]original[/]")
    )
    if near:
        raise typer.Exit(code=NEAR_COPY_EXIT)


def train(
    model: Annotated[str, typer.Option(help="Model family.")],
    data: Annotated[
        Path | None, typer.Option(help="A dataset folder made by `museforge data build`.")
    ] = None,
    preset: Annotated[
        str, typer.Option(help="Size: one of the family's presets (tiny, small, base).")
    ] = "small",
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<family>-<preset>).")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue this run folder exactly where it stopped.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    max_steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many optimizer steps.")
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(min=1, help="Epochs (default from the preset's TrainConfig).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Per-process batch size.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")] = None,
    patience: Annotated[
        int | None, typer.Option(min=1, help="Stop after N epochs without a better validation loss.")
    ] = None,
    min_delta: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="For --patience, an evaluation counts as better only if it lowers the loss by more than this "
            "(default 0; OUT/best still keeps any gain).",
        ),
    ] = None,
    checkpoint_every: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Optimizer steps between rewrites of OUT/last (default 500; it is rewritten each epoch too).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of weights, data order and augmentation.")] = 0,
    transpose: Annotated[
        int,
        typer.Option(
            min=0, max=12, help="Random transposition of training windows by up to ± this many semitones."
        ),
    ] = 6,
    loader_workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes per trainer.")] = 0,
    init: Annotated[
        Path | None,
        typer.Option(
            help="Start from this checkpoint (fine-tuning): its weights and its model config, which --model-config "
            "may change; the preset then gives the training recipe."
        ),
    ] = None,
    model_config: Annotated[
        str | None,
        typer.Option(
            help="Model config overrides of the preset as JSON, e.g. '{\"binary_neurons\": true}' for MuseGAN."
        ),
    ] = None,
    precision: Annotated[
        str | None,
        typer.Option(
            help="Arithmetic: fp32, bf16 (autocast; fp32 weights) or auto (bf16 on CUDA, fp32 on a CPU). Default: "
            "the preset's (auto; MuseGAN fp32). bf16 also speeds up a CPU with native bf16 (AVX-512 BF16, AMX)."
        ),
    ] = None,
    threads: Threads = None,
) -> None:
    """Train a model family on a dataset; checkpoints go to OUT/best and OUT/last, the log to OUT/log.csv.

    Runs on several GPUs or machines unchanged under torchrun (e.g. `torchrun --nproc-per-node 2 -m museforge
    train ...`).
    """
    from museforge.families import get_family
    from museforge.families.training import resume_run, start_run
    from museforge.training.distributed import select_device

    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun's trainers on this machine
    _threads(threads, share=local_processes)
    dev = str(select_device(device))
    try:
        if resume is not None:
            result = resume_run(resume, device=dev, max_steps=max_steps)
            out = resume
        else:
            if data is None:
                raise _fail("--data is required (or --resume RUN_DIR)")
            out = out or Path("runs") / f"{get_family(model).name}-{preset}"
            model_overrides = _json_object(model_config, "--model-config") if model_config else None
            overrides = {
                k: v
                for k, v in {
                    "max_steps": max_steps,
                    "epochs": epochs,
                    "batch_size": batch_size,
                    "lr": lr,
                    "patience": patience,
                    "min_delta": min_delta,
                    "checkpoint_every": checkpoint_every,
                    "seed": seed,
                    "num_workers": loader_workers,
                    "precision": precision,
                }.items()
                if v is not None
            }
            result = start_run(
                model,
                data,
                preset,
                out,
                device=dev,
                train_overrides=overrides,
                max_shift=transpose,
                init_from=init,
                model_overrides=model_overrides,
            )
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    console.print(
        f"[bold green]trained[/] {out}: step {result.step}, epoch {result.epoch}; "
        f"best validation loss {result.best_eval_loss}; checkpoints in {out / 'best'} and {out / 'last'}"
    )


def _numbered(path: Path, i: int, n: int) -> Path:
    """song.mid -> song-1.mid ... when several samples are written."""
    return path if n == 1 else path.with_name(f"{path.stem}-{i + 1}{path.suffix}")


OPTION_ALIASES = {"style": ("--genre",), "walk": ("--morph",)}  # earlier spellings people already use


def _request_options() -> list[inspect.Parameter]:
    """``generate``'s model options: every family's request fields, each once, typed as a person types it and
    with each family's default in its help. The family of the chosen model checks them."""
    from museforge.families import FAMILIES

    seen: dict[str, list[tuple[str, Any, Any]]] = {}
    for family in FAMILIES:
        for name, field in family.request.model_fields.items():
            if name != "operation":
                seen.setdefault(name, []).append((family.label, field, field.default))
    params = []
    for name, takers in seen.items():
        field = takers[0][1]
        kind = next((t for t in (int, float) if field.annotation in (t, t | None)), str)
        defaults = "; ".join(
            f"{label}: {'unset' if default is None else default}" for label, _, default in takers
        )
        flag = "--" + name.replace("_", "-")
        option = typer.Option(flag, *OPTION_ALIASES.get(name, ()), help=f"{field.description} [{defaults}]")
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[kind | None, option]
            )
        )
    return params


def generate(
    out: Annotated[Path, typer.Option(help="MIDI file to write (song-1.mid, song-2.mid ... with several).")],
    model: Annotated[
        str | None,
        typer.Option(help="A shipped model name (`museforge models list`) or a checkpoint folder."),
    ] = None,
    primer: Annotated[
        Path | None, typer.Option(help="Continue this music file (MIDI, MusicXML, ABC, kern).")
    ] = None,
    accompany: Annotated[
        Path | None,
        typer.Option(help="Accompany this music file (MuseGAN): its --tracks are kept as they are."),
    ] = None,
    operation: Annotated[
        str | None,
        typer.Option(
            help="generate, continue, or a family's own (restyle with --primer as the piece, accompany)."
        ),
    ] = None,
    audio: Annotated[
        Path | None, typer.Option(help="Also render audio (.wav, .flac, .ogg or .mp3) with the GM SoundFont.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        str,
        typer.Option(
            help="Weights while sampling: fp32, fp16 (REMI Transformer, MuseMorphose; faster on a CPU) or auto "
            "(fp16 where it agrees with fp32 on a probe)."
        ),
    ] = "auto",
    threads: Threads = None,
    **options: Any,
) -> None:
    """Sample music from a trained model and write it as MIDI (and audio). The model options are its family's:
    an option another family takes is refused with the list of those this model takes."""
    import time

    from museforge.families.serving import generate_song, get_model
    from museforge.models.zoo import DEFAULT_MODEL
    from museforge.training.distributed import select_device

    start = time.perf_counter()
    chosen = _threads(threads)
    try:
        if audio is not None and audio.suffix.lower() not in (".wav", ".flac", ".ogg", ".mp3"):
            raise ValueError(f"--audio must end in .wav, .flac, .ogg or .mp3, got {audio.name}")
        loaded = get_model(model or DEFAULT_MODEL, select_device(device), precision)
        songs = generate_song(loaded, primer=primer, accompany=accompany, operation=operation, **options)
    except (ValueError, OSError) as exc:  # bad options, unknown model/style, unreadable checkpoint/primer
        raise _fail(str(exc)) from exc
    for i, song in enumerate(songs):
        _report_song(
            song, _numbered(out, i, len(songs)), None if audio is None else _numbered(audio, i, len(songs))
        )
    if loaded.precision_decision is not None:
        console.print(f"[dim]precision {loaded.precision_decision}[/]")
    console.print(
        f"model {loaded.name} ({songs[0].params.get('precision', 'fp32')}, {chosen}), seed "
        f"{songs[0].params['seed']}, {len(songs)} song(s) in "
        f"{time.perf_counter() - start:.1f} s (sampling {songs[0].seconds:.1f} s)"
    )


def _report_song(song: Any, path: Path, audio: Path | None) -> None:
    """Write one song (and its audio), and say what was written and whether it copies its training data."""
    path = song.save_midi(path)
    notes = sum(len(t.notes) for t in song.score.tracks)
    made = f"{song.new_tokens} tokens" if song.tokens else f"{len(song.score.tracks)} tracks"
    console.print(f"[bold green]wrote[/] {path} ({notes} notes, {made})")
    if audio is not None:
        from museforge.audio import render_to_file

        audio.parent.mkdir(parents=True, exist_ok=True)
        render_to_file(song.score, audio)
        console.print(f"[bold green]wrote[/] {audio}")
    check = song.originality
    if check is not None and check.near_copy:
        console.print(
            f"[bold yellow]warning:[/] {path} is a near-copy of the training data (longest copied run "
            f"{check.result.longest_run} notes, {check.result.copied_share:.0%} of notes in copied runs)"
        )


_GENERATE_OWN = [p for p in inspect.signature(generate).parameters.values() if p.kind is not p.VAR_KEYWORD]


def _command(name: str, callback: Callable[..., None], parameters: list[inspect.Parameter]) -> click.Command:
    """A typer command over ``callback`` with these parameters in place of those it was written with."""
    from typer.main import get_command_from_info
    from typer.models import CommandInfo

    callback.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    info = CommandInfo(name=name, callback=callback)
    return get_command_from_info(info, pretty_exceptions_short=True, rich_markup_mode=None)


def _generate_command() -> click.Command:
    """``generate`` with its model options read from the families' request types (pydantic), built when the
    command runs or shows its help, so the other commands and ``museforge --help`` do not pay for them."""
    return _command("generate", generate, _GENERATE_OWN + _request_options())


def _train_command() -> click.Command:
    """``train`` with the registry's family names in ``--model``'s help, the first as its default; built when
    run, as the registry imports every family's request type."""
    from museforge.families import family_names

    names = family_names()
    model = inspect.Parameter(
        "model",
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        default=names[0],
        annotation=Annotated[
            str,
            typer.Option(
                help=f"Model family: {', '.join(names)} (or another spelling of one, e.g. performance-rnn)."
            ),
        ],
    )
    own = inspect.signature(train).parameters.values()
    return _command("train", train, [model if p.name == "model" else p for p in own])


LAZY_COMMANDS = {
    "generate": ("Sample music from a trained model and write it as MIDI (and audio).", _generate_command),
    "train": ("Train a model family on a dataset.", _train_command),
}


def _bar_list(text: str | None) -> list[int] | None:
    """``5-8`` or ``1,3,5-8`` (1-based, inclusive) as 0-based bar indices."""
    if text is None:
        return None
    bars: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise ValueError(f"--bars must look like 5-8 or 1,3,5-8 (1-based), got {text!r}") from None
        if first < 1 or last < first:
            raise ValueError(f"--bars ranges must be 1-based and ascending, got {part!r}")
        bars.extend(range(first - 1, last))
    return bars


def _shift_or_classes(text: str | None, label: str) -> int | list[int] | None:
    """``+2``/``-1`` (a shift) or ``3,3,5,5`` (explicit classes for the selected bars)."""
    if text is None:
        return None
    text = text.strip()
    try:
        if text[:1] in "+-" and "," not in text:
            return int(text)
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--{label} is a shift like +2 or -1, or classes like 3,3,5,5; got {text!r}"
        ) from None


RestyleModel = Annotated[
    str | None,
    typer.Option(
        help="A MuseMorphose checkpoint folder or shipped model (default: the first shipped one that can re-style)."
    ),
]


def _model_for(operation: str, model: str | None) -> str:
    """The model asked for, or the first shipped model whose family can do ``operation``."""
    if model is not None:
        return model
    from museforge.families import get_family
    from museforge.models.zoo import ModelNotFoundError, list_models

    try:
        infos = list_models()
    except ModelNotFoundError as exc:
        raise ValueError(f"no shipped model can {operation}: {exc}; pass --model") from exc
    for info in infos:
        with contextlib.suppress(ValueError):  # a checkpoint of a family this version does not know
            if any(o.name == operation for o in get_family(info.family).operations):
                return info.name
    raise ValueError(f"no shipped model can {operation}: pass --model")


@app.command("transfer")
def transfer(
    piece: Annotated[Path, typer.Argument(help="Music to transform (MIDI, MusicXML, ABC, kern).")],
    out: Annotated[Path, typer.Option(help="MIDI file to write.")],
    rhythm: Annotated[
        str | None,
        typer.Option(help="Rhythmic-intensity shift (+2, -1) or classes per selected bar (3,3,5)."),
    ] = None,
    polyphony: Annotated[
        str | None, typer.Option(help="Polyphony shift (+1, -2) or classes per selected bar (1,1,2).")
    ] = None,
    bars: Annotated[
        str | None, typer.Option(help="Bars to change, 1-based: 5-8 or 1,3,5-8 (default: all).")
    ] = None,
    keep_others: Annotated[
        bool, typer.Option(help="Keep the bars outside --bars exactly as they are.")
    ] = True,
    model: RestyleModel = None,
    style: Annotated[str | None, typer.Option(help="Style token to lead with, e.g. folk.")] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Sampling temperature (model default 1.2).")
    ] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus mass (model default 0.9).")] = None,
    candidates: Candidates = 1,
    guidance: Guidance = DEFAULT_GUIDANCE,
    seed: Annotated[int | None, typer.Option(help="Seed; the same seed gives the same result.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[
        str, typer.Option(help="Weights while sampling: fp32, fp16 or auto (fp16 where it agrees with fp32).")
    ] = "auto",
    threads: Threads = None,
) -> None:
    """Style transfer (MuseMorphose): re-generate a piece with shifted rhythm/polyphony classes, keeping its
    melody and harmony."""
    import time

    from museforge.families.musemorphose.sample import restyle_song
    from museforge.families.serving import get_model
    from museforge.training.distributed import select_device

    start = time.perf_counter()
    chosen = _threads(threads)
    try:
        loaded = get_model(_model_for("restyle", model), select_device(device), precision)
        (song,) = restyle_song(
            loaded,
            piece,
            rhythm=_shift_or_classes(rhythm, "rhythm"),
            polyphony=_shift_or_classes(polyphony, "polyphony"),
            bars=_bar_list(bars),
            keep_other_bars=keep_others,
            style=style,
            seed=seed,
            temperature=temperature,
            top_p=top_p,
            candidates=candidates,
            guidance=guidance,
        )
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    path = song.save_midi(out)
    rhythm_classes, polyphony_classes = (list(c) for c in zip(*song.params["attributes"], strict=True))
    console.print(
        f"[bold green]wrote[/] {path} ({song.params['source_bars']} bars; rhythm {rhythm_classes}, "
        f"polyphony {polyphony_classes}; seed {song.params['seed']}; {song.params['precision']}; {chosen}) in "
        f"{time.perf_counter() - start:.1f} s"
    )
    if loaded.precision_decision is not None:
        console.print(f"[dim]precision {loaded.precision_decision}[/]")
    check = song.originality
    if check is not None and check.near_copy:
        console.print(
            f"[bold yellow]warning:[/] the re-styled bars are a near-copy of the training data (longest copied "
            f"run {check.result.longest_run} notes)"
        )


@app.command("interpolate")
def interpolate(
    a: Annotated[Path, typer.Argument(help="First piece.")],
    b: Annotated[Path, typer.Argument(help="Second piece.")],
    out: Annotated[Path, typer.Option(help="Folder for step-01.mid ... step-N.mid.")],
    steps: Annotated[int, typer.Option(min=2, help="Pieces from A to B, both ends included.")] = 5,
    method: Annotated[str, typer.Option(help="slerp or lerp.")] = "slerp",
    model: RestyleModel = None,
    style: Annotated[str | None, typer.Option(help="Style token to lead with.")] = None,
    candidates: Candidates = 1,
    seed: Annotated[int | None, typer.Option(help="Seed; the same seed gives the same result.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Threads = None,
) -> None:
    """Interpolate between two pieces' per-bar latents (MuseMorphose)."""
    from museforge.families.musemorphose.decode import interpolate as morph
    from museforge.families.serving import get_model
    from museforge.training.distributed import select_device

    _threads(threads)
    try:
        loaded = get_model(_model_for("restyle", model), select_device(device))
        results = morph(
            loaded.checkpoint.model,
            loaded.tokenizer,
            a,
            b,
            steps=steps,
            method=method,
            style=style,
            seed=seed,
            candidates=candidates,
        )
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    for i, result in enumerate(results, 1):
        path = result.save_midi(out / f"step-{i:02d}.mid")
        console.print(f"[bold green]wrote[/] {path}")


@app.command("evaluate-transfer")
def evaluate_transfer(
    data: Annotated[Path, typer.Option(help="A built dataset with a REMI cache (its test split is used).")],
    model: RestyleModel = None,
    pieces: Annotated[
        int, typer.Option(min=1, help="Test pieces drawn at random for control/fidelity.")
    ] = 40,
    segments: Annotated[int, typer.Option(min=1, help="Test segments scored for perplexity.")] = 300,
    candidates: Candidates = 1,
    guidance: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=MAX_GUIDANCE,
            help="Amplify the shifts by this much (see `transfer --guidance`; 0: the paper's way).",
        ),
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for the draw and the sampling.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Write the results as JSON here.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    threads: Threads = None,
) -> None:
    """MuseMorphose's evaluation: control ρ and leak (shifts -3..+3), fidelity to the input, perplexity."""
    import numpy as np
    from rich.table import Table

    from museforge.data.manifest import load_manifest
    from museforge.families.musemorphose.evaluate import PAPER, evaluate_transfer, reconstruction_nll
    from museforge.families.musemorphose.model import MuseMorphose
    from museforge.families.serving import get_model
    from museforge.training.distributed import select_device

    _threads(threads)
    try:
        loaded = get_model(_model_for("restyle", model), select_device(device))
        net, tok = loaded.checkpoint.model, loaded.tokenizer
        if not isinstance(net, MuseMorphose):
            raise ValueError(f"model {loaded.name} is a {loaded.family}, not a MuseMorphose")
        records = load_manifest(data, "test")
        order = np.random.default_rng(seed).permutation(len(records))[:pieces]
        chosen = [records[i].midi_path(data) for i in order]
        result = evaluate_transfer(net, tok, chosen, seed=seed, candidates=candidates, guidance=guidance)
        result["likelihood"] = reconstruction_nll(net, tok, data, "test", max_segments=segments)
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from exc
    table = Table(
        "attribute", "ρ", "ρ paper", "leak", "leak paper", "inherent leak", "excess leak", "chroma sim.",
        "groove sim.",
    )  # fmt: skip
    for a in ("rhythm", "polyphony"):
        fid = result["fidelity"][a]
        table.add_row(
            a, f"{result['rho'][a]:.3f}", f"{PAPER['rho'][a]}", f"{result['leak'][a]:.3f}",
            f"{PAPER['leak'][a]}", f"{result['leak_inherent'][a]:.3f}", f"{result['leak_excess'][a]:.3f}",
            f"{fid['chroma']:.3f}", f"{fid['groove']:.3f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        "inherent leak: the leak of the requested classes themselves (what exact control shows on this music); "
        "excess leak = leak - inherent leak"
    )
    nll = result["likelihood"]
    console.print(f"test reconstruction NLL {nll['nll']:.4f} nats/token, perplexity {nll['perplexity']:.3f}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        console.print(f"[bold green]wrote[/] {out}")


models_app = typer.Typer(help="The shipped models.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@models_app.command("list")
def models_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """The shipped models (`$MUSEFORGE_MODELS_DIR` or the repository's models/ folder)."""
    try:
        show_models(as_json)
    except ValueError as exc:
        raise _fail(str(exc)) from exc


@models_app.command("ship")
def models_ship(
    run: Annotated[Path, typer.Argument(help="A training run folder (made by `museforge train`).")],
    name: Annotated[str, typer.Option(help="Model name, e.g. remi-transformer.")],
    data: Annotated[
        Path, typer.Option(help="The dataset the run trained on (for its test split and index).")
    ],
    description: Annotated[
        str,
        typer.Option(
            help="One line for a musician: what the model makes, what it is good at, how long it takes "
            "(the app's form and `museforge models list` show it; the training story goes in the card)."
        ),
    ],
    hardware: Annotated[str, typer.Option(help="Where the run trained, for the model card.")],
    models_root: Annotated[
        Path | None, typer.Option(help="Where to put it (default: the shipped models folder).")
    ] = None,
    samples: Annotated[int, typer.Option(min=1, help="Samples evaluated against the test split.")] = 40,
    candidates: CardCandidates = 8,
    guidance: CardGuidance = DEFAULT_GUIDANCE,
    threads: Threads = None,
) -> None:
    """Copy a run's best checkpoint into the model zoo with an originality index and a measured model card."""
    from museforge.families.card import ShipOptions
    from museforge.lab.model_card import ship_model
    from museforge.models.zoo import models_dir

    _threads(threads)
    try:
        root = models_root or models_dir()
        dest = ship_model(
            run,
            data,
            root,
            ShipOptions(
                name=name,
                description=description,
                hardware=hardware,
                n_samples=samples,
                candidates=candidates,
                guidance=guidance,
            ),
            log=lambda message: console.print(f"[dim]{message}[/]"),
        )
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"[bold green]shipped[/] {dest} (card: {dest / 'MODEL_CARD.md'})")


@models_app.command("resample")
def models_resample(
    model: Annotated[str, typer.Argument(help="A shipped model name or a shipped model's folder.")],
    data: Annotated[Path, typer.Option(help="The dataset the model trained on (for its test split).")],
    samples: Annotated[int, typer.Option(min=1, help="Samples evaluated against the test split.")] = 40,
    precision: Annotated[
        str, typer.Option(help="Sample as the app does (auto), or in fp32 / fp16.")
    ] = "auto",
    candidates: CardCandidates = 8,
    guidance: CardGuidance = DEFAULT_GUIDANCE,
    threads: Threads = None,
) -> None:
    """Re-measure a shipped model's samples against the test split and rewrite that part of its card (and
    evaluation/), keeping the rest: for when sampling changed since the model was shipped."""
    from museforge.families.card import ShipOptions
    from museforge.lab.model_card import resample_card
    from museforge.models.zoo import resolve_model

    _threads(threads)
    try:
        folder = resolve_model(model)
        options = ShipOptions(
            name=folder.name, description="", hardware="", n_samples=samples, candidates=candidates,
            guidance=guidance,
        )  # fmt: skip
        card = resample_card(
            folder, data, options, precision, log=lambda message: console.print(f"[dim]{message}[/]")
        )
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    console.print(f"[bold green]re-measured[/] {card}")


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (127.0.0.1: this machine).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Generation jobs run at once (default: MUSEFORGE_WORKERS or 2).")
    ] = None,
    var: Annotated[
        Path | None, typer.Option(help="Folder of the database, uploads and results (default: var/).")
    ] = None,
    models_dir: Annotated[
        Path | None, typer.Option(help="Folder of model checkpoints (default: the shipped models).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Torch threads of each job (default: MUSEFORGE_TORCH_THREADS, else the idle CPUs / workers).",
        ),
    ] = None,
) -> None:
    """Start the web app: pages at http://HOST:PORT/, the JSON API under /api/v1 (OpenAPI docs at /docs).

    Settings come from MUSEFORGE_* environment variables or a .env file; options given here win.
    """
    import uvicorn

    from museforge.web import Settings, create_app

    given = {"workers": workers, "var_dir": var, "models_dir": models_dir, "torch_threads": threads}
    settings = Settings(**{k: v for k, v in given.items() if v is not None})
    console.print(f"[bold green]museforge[/] on http://{host}:{port}/ (data in {settings.var_dir.resolve()})")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info")


users_app = typer.Typer(help="Accounts of the web app: create users, make operators.", no_args_is_help=True)
app.add_typer(users_app, name="users")
analytics_app = typer.Typer(
    help="What listeners do: the Insights report, event rollups.", no_args_is_help=True
)
app.add_typer(analytics_app, name="analytics")
VarDir = Annotated[
    Path | None, typer.Option(help="Folder of the web app's database (default: MUSEFORGE_VAR_DIR or var/).")
]


def _store(var: Path | None) -> Any:
    """The web app's repository, opened as `museforge serve` would (SQLite in the var folder, or MongoDB)."""
    from museforge.store import open_repository
    from museforge.web.settings import Settings

    settings = Settings(**({"var_dir": var} if var is not None else {}))
    return open_repository(settings.var_dir.resolve(), settings.mongo_uri, settings.mongo_db)


@users_app.command("create")
def users_create(
    name: Annotated[str, typer.Argument(help="User name: 3 to 32 letters, digits, '_', '.' or '-'.")],
    password: Annotated[
        str,
        typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, help="Asked when not given."),
    ],
    admin: Annotated[bool, typer.Option("--admin", help="An operator, who may see the Insights.")] = False,
    var: VarDir = None,
) -> None:
    """Create a user of the web app."""
    from museforge.store import Conflict
    from museforge.web.security import check_new_credentials, hash_password

    repo = _store(var)
    try:
        check_new_credentials(name, password)
        user = repo.create_user(username=name, password_hash=hash_password(password))
        if admin:
            repo.set_admin(user_id=user.id, admin=True)
    except (ValueError, Conflict) as exc:
        raise _fail(str(exc)) from exc
    finally:
        repo.close()
    console.print(f"[bold green]created[/] {name}{' (admin)' if admin else ''}")


@users_app.command("promote")
def users_promote(
    name: Annotated[str, typer.Argument(help="An existing user name.")],
    demote: Annotated[bool, typer.Option("--demote", help="Take the admin role back instead.")] = False,
    var: VarDir = None,
) -> None:
    """Make a user an operator (admin), who may see the Insights page and API."""
    repo = _store(var)
    try:
        user = repo.find_user(username=name)
        if user is None:
            raise _fail(f"no user {name!r}")
        repo.set_admin(user_id=user.id, admin=not demote)
    finally:
        repo.close()
    console.print(f"[bold green]{'demoted' if demote else 'promoted'}[/] {name}")


@analytics_app.command("report")
def analytics_report(
    since: Annotated[str, typer.Option(help="The last N days (30d) or weeks (4w).")] = "30d",
    out: Annotated[
        Path, typer.Option(help="HTML report to write (charts inline, no external files).")
    ] = Path("report.html"),
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    style: Annotated[str | None, typer.Option(help="Only this style.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Also write the figures as JSON next to it.")
    ] = False,
    var: VarDir = None,
) -> None:
    """The operators' Insights as a self-contained HTML file: activity, style interest, polarization."""
    from museforge.analytics.insights import Scope, insights, parse_span
    from museforge.analytics.report import insights_html, standalone

    try:
        scope = Scope.last(parse_span(since), model, style)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    repo = _store(var)
    try:
        figures = insights(repo, scope)
    finally:
        repo.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(standalone("museforge insights", insights_html(figures)), encoding="utf-8")
    if as_json:
        out.with_suffix(".json").write_text(json.dumps(figures, indent=1), encoding="utf-8")
    a, p = figures["activity"], figures["polarization"]
    er = "–" if p["esteban_ray"] is None else f"{p['esteban_ray']:.3f}"
    console.print(
        f"{scope.to_dict()['since']} to {scope.to_dict()['until']}: {p['listeners']} listeners, "
        f"{a['jobs_total']} generations, {len(p['clusters'])} taste clusters, Esteban-Ray {er}"
    )
    console.print(f"[bold green]wrote[/] {out}")


@analytics_app.command("rollup")
def analytics_rollup(
    older_than: Annotated[str, typer.Option(help="Fold raw events older than this (90d, 12w).")] = "90d",
    var: VarDir = None,
) -> None:
    """Fold old raw events into daily counts: every figure stays the same, the event table shrinks."""
    import time

    from museforge.analytics.insights import parse_span
    from museforge.store.records import day_of

    try:
        keep = parse_span(older_than)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    repo = _store(var)
    try:
        folded = repo.rollup_events(before_day=day_of(time.time()) + 1 - keep)
    finally:
        repo.close()
    console.print(f"[bold green]rolled up[/] {folded} raw events")


lab_app = typer.Typer(
    help="The lab: receive music, fine-tune candidates, gate and promote them.", no_args_is_help=True
)
app.add_typer(lab_app, name="lab")
registry_app = typer.Typer(
    help="Versions of each model: list, inspect, promote, roll back.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
CORPUS_ENV = "MUSEFORGE_LAB_CORPUS"


def _lab(model: str, corpus: Path | None) -> Any:
    """The lab of a shipped model over the var folder (``$MUSEFORGE_VAR_DIR``) and its corpus."""
    from museforge.lab.cycle import Lab
    from museforge.machine import var_dir
    from museforge.models.zoo import locate_model, registry

    name = locate_model(model)[1]
    var = var_dir()
    chosen = corpus or Path(os.environ.get(CORPUS_ENV) or var / "resource" / "datasets" / "music21")
    if not (chosen / "manifest.jsonl").is_file():
        raise _fail(
            f"no corpus dataset at {chosen}: pass --corpus DIR (a folder made by `museforge data build`, what "
            f"the model learned from) or set {CORPUS_ENV}"
        )
    return Lab(var, name, registry(), chosen)


def _learning_arrivals(var: Path) -> list[Any]:
    """The uploads whose owners let museforge learn from them, as the lab's arrivals."""
    from museforge.lab.receive import upload_arrivals

    repo = _store(var)
    try:
        return upload_arrivals(var, repo.list_learning_uploads())
    finally:
        repo.close()


@lab_app.command("update")
def lab_update(
    model: Annotated[str, typer.Option(help="A shipped model (its production version is the parent).")],
    max_steps: Annotated[int, typer.Option(min=1, help="Fine-tuning steps of the candidate.")] = 200,
    corpus: Annotated[
        Path | None,
        typer.Option(
            help=f"The dataset the model learned from (default ${CORPUS_ENV} or var/resource/datasets/music21)."
        ),
    ] = None,
    preset: Annotated[
        str | None, typer.Option(help="Training preset (default: the model's own window).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the replay sample and the fine-tuning.")] = 0,
    threads: Threads = None,
) -> None:
    """One lab cycle: ingest what arrived, fine-tune a candidate, gate it, promote or reject it. Prints progress,
    then one JSON line: model, candidate, decision (promoted, rejected or skipped), reasons and metrics."""
    from museforge.lab.cycle import CycleOptions, LabBusy, update

    _threads(threads)
    lab = _lab(model, corpus)
    try:
        result = update(lab, _learning_arrivals(lab.var), CycleOptions(max_steps=max_steps, preset=preset, seed=seed),
                        log=lambda line: console.print(f"[dim]{line}[/]"))  # fmt: skip
    except (LabBusy, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    print(json.dumps(result, default=str))


@registry_app.command("list")
def registry_list(
    model: Annotated[str | None, typer.Argument(help="One model (default: every shipped model).")] = None,
) -> None:
    """Every version of each model: number, status, parent, when, and the gate's decision."""
    import time

    from museforge.models.zoo import locate_model, model_names, registry

    names = [locate_model(model)[1]] if model else model_names()
    for name in names:
        for v in registry().versions(name):
            gate = "" if v.gate is None else ("; ".join(v.gate["reasons"]) or "passed the gate")
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(v.created))
            console.print(
                f"{name} v{v.number} [bold]{v.status}[/] parent {v.parent or '-'} {when} {v.note} {gate}"
            )


@registry_app.command("show")
def registry_show(model: str, version: int) -> None:
    """One version's whole record as JSON: data it saw, run, metrics, gate report."""
    from museforge.models.zoo import locate_model, registry

    try:
        record = registry().get(locate_model(model)[1], version)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    print(json.dumps(record.to_dict(), indent=2, default=str))


@registry_app.command("promote")
def registry_promote(model: str, version: int) -> None:
    """Put a version into production (the app serves it from its next request)."""
    from museforge.models.zoo import locate_model, registry

    try:
        done = registry().promote(locate_model(model)[1], version, note="promoted by hand")
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"[bold green]{model} v{done.number} is in production[/]")


@registry_app.command("rollback")
def registry_rollback(model: str) -> None:
    """Put the previous production version back."""
    from museforge.models.zoo import locate_model, registry

    try:
        back = registry().rollback(locate_model(model)[1])
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"[bold green]{model} v{back.number} is in production again[/]")
