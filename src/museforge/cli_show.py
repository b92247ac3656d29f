"""What the command line prints that both its entry point and `museforge.cli` need: the lazy console and the
models listing (kept apart from both so neither imports the other at load time)."""

from __future__ import annotations

import json
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console


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
    from museforge.families import DEFAULT_MODEL
    from museforge.models.zoo import list_models, models_dir

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
