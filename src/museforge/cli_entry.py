"""The `museforge` command's entry point, and the parts of the command line it shares with `museforge.cli`.

`museforge models list` is answered here without loading the command line: typer builds a pydantic validator
for the options it parses, and importing typer and pydantic costs more than the listing itself. Every other
command, and a listing that fails, goes to `museforge.cli`, which prints the same listing the same way.
"""

from __future__ import annotations

import json
import os
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

# The argument lists answered without typer, and whether each asks for JSON.
_LISTINGS = {("models", "list"): False, ("models", "list", "--json"): True}


class _LazyConsole:
    """rich's Console, made on first use: `museforge --help` does without rich."""

    @cached_property
    def rich(self) -> Console:
        from rich.console import Console

        return Console(soft_wrap=True)  # messages stay on one line: greppable, copyable paths

    def print(self, *objects: Any, **options: Any) -> None:
        self.rich.print(*objects, **options)


console = _LazyConsole()


def show_models(as_json: bool) -> None:
    """Print the shipped models as a table, or as JSON. Raises ValueError (no models folder, a broken
    checkpoint) before printing anything."""
    from museforge.models.zoo import DEFAULT_MODEL, list_models, models_dir

    infos = list_models()
    where = models_dir()
    if as_json:
        print(json.dumps([i.to_dict() for i in infos], indent=2))
        return
    if not infos:
        console.print(f"no models in {where}")
        return
    from rich.table import Table

    table = Table(title=f"models in {where}")
    table.add_column("name", no_wrap=True)  # the name is what the user types: never cut it
    table.add_column("family")
    for column in ("parameters", "step", "valid NLL"):
        table.add_column(column, justify="right")
    table.add_column("styles")
    table.add_column("size", justify="right")
    table.add_column("description")
    for info in infos:
        table.add_row(
            info.name + (" (default)" if info.name == DEFAULT_MODEL else ""),
            info.family,
            f"{info.parameters / 1e6:.2f}M",
            str(info.step),
            "-" if info.valid_nll is None else f"{info.valid_nll:.3f}",
            ", ".join(info.styles) or "-",
            f"{info.size_mb:.1f} MB",
            info.description,
        )
    console.print(table)


def main() -> None:
    """Run `museforge` with ``sys.argv``."""
    as_json = _LISTINGS.get(tuple(sys.argv[1:]))
    if as_json is not None:
        try:
            show_models(as_json)
            return
        except ValueError:
            pass  # nothing was printed: the full command line reports it, as it reports every error
        except BrokenPipeError:  # `museforge models list --json | head`: quiet, as under typer
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
    from museforge.cli import app

    app()
