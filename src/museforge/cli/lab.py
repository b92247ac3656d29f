"""`museforge lab` and `registry`: the lab's update cycle and the versions it keeps."""

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from museforge.cli.shell import Threads, _fail, _store, _threads, app
from museforge.cli_show import console

lab_app = typer.Typer(
    help="The lab: receive music, fine-tune candidates, gate and promote them.", no_args_is_help=True
)
app.add_typer(lab_app, name="lab")
registry_app = typer.Typer(
    help="Versions of each model: list, inspect, promote, roll back.", no_args_is_help=True
)
app.add_typer(registry_app, name="registry")
CORPUS_ENV = "MUSEFORGE_LAB_CORPUS"


def _lab(model: str, corpus: Path | None, need_corpus: bool = True) -> Any:
    """The lab of a shipped model over the var folder (``$MUSEFORGE_VAR_DIR``) and its corpus (which learning
    from feedback alone does not read)."""
    from museforge.lab.cycle import Lab
    from museforge.machine import var_dir
    from museforge.models.zoo import locate_model, registry

    name = locate_model(model)[1]
    var = var_dir()
    chosen = corpus or Path(os.environ.get(CORPUS_ENV) or var / "resource" / "datasets" / "music21")
    if need_corpus and not (chosen / "manifest.jsonl").is_file():
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


@lab_app.command("prefer")
def lab_prefer(
    model: Annotated[
        str, typer.Option(help="A shipped model (its production version's songs are learned from).")
    ],
    method: Annotated[
        str,
        typer.Option(
            help="kto: liked / disliked songs alone (fits sparse feedback); dpo: pairs of songs "
            "one listener judged differently for the same request."
        ),
    ] = "kto",
    max_steps: Annotated[int, typer.Option(min=1, help="Fine-tuning steps of the candidate.")] = 100,
    lr: Annotated[float, typer.Option(help="Peak learning rate (> 0).")] = 5e-5,
    beta: Annotated[
        float | None,
        typer.Option(
            min=1e-6,
            help="How much a nat of reward over the reference counts (default: the method's, DPO 0.1, KTO 1.0); "
            "smaller lets each song move further from the reference before its push saturates.",
        ),
    ] = None,
    transposed_copies: Annotated[
        int,
        typer.Option(
            min=0,
            max=12,
            help="Transposed copies of each training example (within ±6 semitones): the taste is learnt rather "
            "than the liked tunes' pitches (0: none).",
        ),
    ] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the fine-tuning.")] = 0,
    threads: Threads = None,
) -> None:
    """Preference fine-tuning from listeners' feedback: build the set from the store, tune a candidate against
    the production version, gate it (the lab's gate, preference accuracy, diversity), promote or reject it.
    Prints progress, then one JSON line: model, candidate, decision, reasons, metrics and examples."""
    from museforge.lab.cycle import LabBusy
    from museforge.lab.prefer import PreferOptions, prefer
    from museforge.training.preference import METHODS

    if method not in METHODS:
        raise _fail(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    _threads(threads)
    lab = _lab(model, None, need_corpus=False)
    repo = _store(lab.var)
    try:
        options = PreferOptions(
            method=method,
            max_steps=max_steps,
            lr=lr,
            beta=beta,
            transposed_copies=transposed_copies,
            seed=seed,
        )
        result = prefer(lab, repo, options, log=lambda line: console.print(f"[dim]{line}[/]"))
    except (LabBusy, ValueError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from exc
    finally:
        repo.close()
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
