"""Summary figures of a built dataset, for `museforge data stats`."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from museforge.data.manifest import REJECTS, load_manifest
from museforge.io import read_jsonl


def dataset_stats(data_dir: Path) -> dict[str, Any]:
    """Pieces, notes and hours per style and split; token counts of every tokenized cache found."""
    records = load_manifest(data_dir)
    styles: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"pieces": 0, "notes": 0, "hours": 0.0, "splits": Counter()}
    )
    for r in records:
        row = styles[r.style]
        row["pieces"] += 1
        row["notes"] += r.n_notes
        row["hours"] += r.duration_s / 3600
        row["splits"][r.split] += 1
    tokens: dict[str, dict[str, int]] = {}
    for index in sorted((data_dir / "tokens").glob("*/index.json")):
        info = json.loads(index.read_text())
        tokens[index.parent.name] = {split: int(s["tokens"]) for split, s in info["splits"].items()}
    return {
        "pieces": len(records),
        "notes": sum(r.n_notes for r in records),
        "hours": sum(r.duration_s for r in records) / 3600,
        "splits": dict(Counter(r.split for r in records)),
        "styles": {k: {**v, "splits": dict(v["splits"])} for k, v in styles.items()},
        "rejected": len(read_jsonl(data_dir / REJECTS)),
        "tokens": tokens,
    }
