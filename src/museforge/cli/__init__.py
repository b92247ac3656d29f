"""The `museforge` command line. Thin: it parses options, picks devices and calls the library and the lab.

One module per command group registers its commands on `app` (`museforge.cli.shell`); importing this package
loads them all, and none of them imports torch or the web framework until a command runs.
"""

from museforge.cli import accounts, data, generate, lab, models
from museforge.cli.shell import app

__all__ = ["accounts", "app", "data", "generate", "lab", "models"]
