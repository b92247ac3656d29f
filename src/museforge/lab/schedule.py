"""When the lab runs on its own: a schedule written as people say it, ``"03:30"`` or ``"every 6h"``."""

from __future__ import annotations

import re
from dataclasses import dataclass

_DAILY = re.compile(r"^(?:daily\s*(?:at)?\s*)?([01]?\d|2[0-3]):([0-5]\d)$")
_EVERY = re.compile(r"^every\s+(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Schedule:
    """Daily at ``at`` seconds after midnight UTC, or every ``every`` seconds."""

    at: int | None = None
    every: float | None = None

    def next_run(self, now: float) -> float:
        """The first run time strictly after ``now`` (a Unix time)."""
        if self.every is not None:
            return now + self.every
        assert self.at is not None
        midnight = now - now % 86400
        today = midnight + self.at
        return today if today > now else today + 86400


def parse_schedule(text: str) -> Schedule:
    """``"03:30"`` or ``"daily at 03:30"`` (UTC), or ``"every 6h"`` (s, m, h or d); anything else is a
    ValueError that shows the forms."""
    cleaned = text.strip().lower()
    if match := _DAILY.match(cleaned):
        return Schedule(at=int(match[1]) * 3600 + int(match[2]) * 60)
    if (match := _EVERY.match(cleaned)) and float(match[1]) > 0:
        return Schedule(every=float(match[1]) * _UNIT[match[2]])
    raise ValueError(
        f"lab schedule {text!r}: use 'HH:MM' (daily, UTC), 'daily at HH:MM' or 'every N[s|m|h|d]'"
    )
