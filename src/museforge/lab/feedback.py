"""From what listeners said and did to a preference set: how much each listener liked each song, and the pairs
and single songs a preference fine-tune learns from.

A listener's verdict on a song (its utility, in [-1, 1]) is read in order of how much a signal says:

- stars, when given (the last rating counts): (stars − 3) / 2, so 1 star is −1, 3 stars 0, 5 stars +1;
- else like (+1) or dislike (−1), the last of them;
- else what they did, summed and clipped to [−1, 1]: played to the end +0.25, replayed +0.5, downloaded +0.5,
  shared +0.5, skipped early −0.5, asked for another one right after it −0.5.

A zero verdict says nothing and is left out. DPO pairs two songs one listener judged differently for the same
request (the family's options, the seed aside); KTO takes every judged song alone, liked or not.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from museforge.store.records import Feedback

IMPLICIT = {"play_end": 0.25, "replay": 0.5, "download": 0.5, "share": 0.5, "skip": -0.5, "regenerate": -0.5}
NOT_THE_REQUEST = ("seed", "num_samples")  # what may differ between two songs "for the same request"


def utilities(signals: Iterable[Feedback]) -> dict[tuple[str, str], float]:
    """{(listener, song id): verdict in [-1, 1]} (see the module's docstring), zero verdicts left out."""
    stars: dict[tuple[str, str], float] = {}
    opinion: dict[tuple[str, str], float] = {}
    acted: dict[tuple[str, str], float] = defaultdict(float)
    for s in sorted(signals, key=lambda s: s.at):
        key = (s.listener, s.song_id)
        if s.kind == "rate":
            stars[key] = (s.value - 3) / 2
        elif s.kind in ("like", "dislike"):
            opinion[key] = 1.0 if s.kind == "like" else -1.0
        else:
            acted[key] += IMPLICIT.get(s.kind, 0.0)
    verdicts = {k: max(-1.0, min(1.0, v)) for k, v in acted.items()}
    verdicts |= opinion
    verdicts |= stars
    return {k: v for k, v in verdicts.items() if v != 0}


def request_key(params: dict[str, Any], fields: Iterable[str]) -> str:
    """What a song was asked for: its family's options (``fields``) but the seed, as canonical JSON."""
    return json.dumps(
        {k: params.get(k) for k in sorted(fields) if k not in NOT_THE_REQUEST}, sort_keys=True, default=str
    )


@dataclass(frozen=True)
class Judged:
    listener: str
    song_id: str
    utility: float
    request: str  # `request_key`


def pairs(judged: Iterable[Judged], per_group: int = 10) -> list[tuple[Judged, Judged]]:
    """(chosen, rejected) pairs: one listener, one request, two different verdicts; at most ``per_group`` per
    listener and request, the widest gaps first, so one prolific listener cannot fill the set."""
    groups: dict[tuple[str, str], list[Judged]] = defaultdict(list)
    for j in judged:
        groups[(j.listener, j.request)].append(j)
    out = []
    for group in groups.values():
        found = [(a, b) if a.utility > b.utility else (b, a) for a, b in combinations(group, 2)
                 if a.utility != b.utility]  # fmt: skip
        found.sort(key=lambda p: (p[1].utility - p[0].utility, p[0].song_id, p[1].song_id))
        out += found[:per_group]
    return out


def held_out(*song_ids: str, share: float) -> bool:
    """Whether an example (named by its songs) is held out for the gate: a fixed hash of the ids, so the same
    feedback splits the same way every time."""
    digest = hashlib.sha256("|".join(song_ids).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share
