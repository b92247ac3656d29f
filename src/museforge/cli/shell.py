"""What every command group of the command line shares: the top-level app (whose lazy commands are built
only when run), option types, and the errors and thread choice of the edge."""

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer
from typer.core import TyperGroup

from museforge.cli_show import console
from museforge.defaults import MAX_GUIDANCE

# The commands built only when run: name -> (one-line help, builder); `museforge.cli.generate` fills it.
LAZY_COMMANDS: dict[str, tuple[str, Callable[[], click.Command]]] = {}


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


if TYPE_CHECKING:
    from museforge.machine import ThreadChoice

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


def _store(var: Path | None) -> Any:
    """The web app's repository, opened as `museforge serve` would (SQLite in the var folder, or MongoDB)."""
    from museforge.store import open_repository
    from museforge.web.settings import Settings

    settings = Settings(**({"var_dir": var} if var is not None else {}))
    return open_repository(settings.var_dir.resolve(), settings.mongo_uri, settings.mongo_db)
