"""The museforge web application: JSON API under /api/v1, server-rendered pages, jobs, accounts.

Start it with ``museforge serve`` (or ``make run``); build it in code with `create_app`.
"""

from museforge.web.app import create_app
from museforge.web.settings import Settings

__all__ = ["Settings", "create_app"]
