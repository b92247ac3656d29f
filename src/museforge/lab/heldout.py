"""The fixed held-out set a model ships with (``heldout/`` in its folder): what the lab's gate scores every
candidate on, so production and candidate are always compared on the same music.

It is a dataset folder (`museforge.data.manifest` layout) of at most ``per_style`` test-split pieces per style,
the first by id, so it is small enough to score in well under a minute on 2 cores and never overlaps what the
model trained on (splits are drawn per transposition family, see `museforge.data.metadata.split_of`).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import SourceUnit
from museforge.data.manifest import PieceRecord, load_manifest, write_manifest

HELDOUT = "heldout"


def copy_pieces(pieces: list[tuple[PieceRecord, Path]], out: Path, split: str | None = None) -> None:
    """Make ``out`` a dataset of these (record, its dataset folder) pairs, MIDI hard-linked where possible,
    optionally all in one split."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for record, source in pieces:
        target = record.midi_path(out)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.hardlink_to(record.midi_path(source))
            except OSError:  # another file system, or links not allowed
                shutil.copy2(record.midi_path(source), target)
        records.append(replace(record, split=split) if split is not None else record)
    write_manifest(out, records)


def pick_heldout(data_dir: Path, per_style: int) -> list[PieceRecord]:
    """At most ``per_style`` test pieces of each style of a built dataset, the first by id."""
    by_style: dict[str, list[PieceRecord]] = defaultdict(list)
    for record in load_manifest(data_dir, "test"):
        if len(by_style[record.style]) < per_style:
            by_style[record.style].append(record)
    return [r for style in sorted(by_style) for r in by_style[style]]


def make_heldout(units: list[SourceUnit], out: Path, per_style: int = 8, workers: int = 2) -> int:
    """Build ``units`` and keep a held-out set of their test pieces in ``out``; returns how many it holds."""
    with tempfile.TemporaryDirectory(prefix="museforge-heldout-") as tmp:
        built = Path(tmp)
        build_dataset(units, built, BuildOptions(workers=workers, progress=False))
        records = pick_heldout(built, per_style)
        if not records:
            raise ValueError("the units gave no test-split piece to hold out")
        copy_pieces([(r, built) for r in records], out, split="test")
    return len(records)
