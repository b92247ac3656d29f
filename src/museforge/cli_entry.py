"""The `museforge` command's entry point.

`museforge models list` is answered here without loading the command line: typer builds a pydantic validator
for the options it parses, and importing typer and pydantic costs more than the listing itself. Every other
command, and a listing that fails, goes to `museforge.cli`, which prints the same listing the same way.
"""

from __future__ import annotations

import os
import sys

from museforge.cli_show import show_models

# The argument lists answered without typer, and whether each asks for JSON.
_LISTINGS = {("models", "list"): False, ("models", "list", "--json"): True}


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
