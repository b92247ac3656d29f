"""`museforge data`, `evaluate`, `score` and `originality`: datasets and how music measures against them."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from museforge.cli_show import console

if TYPE_CHECKING:
    from museforge.families.loaded import LoadedModel

from museforge.cli.shell import Threads, _fail, _json_object, _threads, app

data_app = typer.Typer(help="Build, tokenize and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")


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
    if "voice_leading" in report:
        measures = report["voice_leading"]["measures"]
        pairs = (
            f"{name} {m['generated']['mean']:.3f} vs {m['reference']['mean']:.3f}"
            for name, m in measures.items()
        )
        console.print("voice leading, generated vs reference: " + ", ".join(pairs))
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
    from museforge.families import DEFAULT_MODEL
    from museforge.families.likelihood import heldout_likelihood
    from museforge.io import atomic_write_json
    from museforge.models.zoo import resolve_model
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
