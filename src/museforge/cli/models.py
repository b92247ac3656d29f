"""`museforge models` (list, ship, resample) and `serve`."""

from pathlib import Path
from typing import Annotated

import typer

from museforge.cli.shell import CardCandidates, CardGuidance, Threads, _fail, _threads, app
from museforge.cli_show import console, show_models
from museforge.defaults import DEFAULT_GUIDANCE

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


@app.command("worker")
def worker(
    queues: Annotated[
        str, typer.Option(help="Queues to take jobs from, comma-separated: generate (songs), lab (the lab).")
    ] = "generate,lab",
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Jobs this worker runs at once.")] = 2,
    device: Annotated[
        str, typer.Option(help="auto (a GPU when there is one), cpu or cuda: where the models run.")
    ] = "auto",
    batching: Annotated[
        bool | None,
        typer.Option(
            help="Decode the running jobs of one model together (the families that can batch); default: on a "
            "GPU only (on a CPU it measured no faster, see the README)."
        ),
    ] = None,
    beat: Annotated[
        bool,
        typer.Option(help="Also run the queue's scheduler (MUSEFORGE_LAB_SCHEDULE): in exactly one worker."),
    ] = False,
    var: Annotated[
        Path | None, typer.Option(help="Folder of the database, uploads and results (default: var/).")
    ] = None,
) -> None:
    """Run jobs from the distributed queue (MUSEFORGE_QUEUE_URL, a Redis URL) with the models loaded once.

    Settings come from MUSEFORGE_* environment variables or a .env file, as for `serve`: every web process and
    worker of a deployment must share the queue URL, the store (MUSEFORGE_MONGO_URI, or one var folder on one
    machine) and the models.
    """
    from pydantic import ValidationError

    from museforge.machine import use_threads
    from museforge.web import Settings
    from museforge.web.worker import run_worker

    if device not in ("auto", "cpu", "cuda"):
        raise _fail(f"--device {device!r}: use auto, cpu or cuda")
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    given = {"var_dir": var, "device": device}
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise _fail(str(exc)) from exc
    if settings.queue_url is None:
        raise _fail(
            "MUSEFORGE_QUEUE_URL is not set: a worker needs the queue's Redis URL (redis://host:6379/0)"
        )
    if batching is None:
        batching = device == "cuda"
    names = [q.strip() for q in queues.split(",") if q.strip()]
    # a batch decodes on one thread; one-at-a-time jobs share the idle CPUs
    threads = use_threads(settings.torch_threads or None, share=1 if batching else concurrency)
    console.print(
        f"[bold green]museforge worker[/] on {', '.join(names)} ({concurrency} at once, {device}, "
        f"{'batching, ' if batching else ''}"
        f"{threads.threads} torch threads; data in {settings.var_dir.resolve()})"
    )
    try:
        run_worker(settings, names, concurrency, batching, beat)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
