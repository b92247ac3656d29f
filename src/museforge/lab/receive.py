"""Music that arrives for the lab: files dropped in the inbox and uploads whose owners let museforge learn.

Arrivals go through `museforge data build` itself (the same readers, limits, rejects report, incremental
cache and stable per-family splits) into one dataset folder, ``var/resource/received``. Each new piece is
then judged: a piece with the same notes as one of the corpus (or an earlier arrival) is a duplicate, a
near-copy of a training piece (the production model's originality index) is a copy, a piece unlike any music
the corpus knows (random notes) is an outlier, and all three are dropped; a piece without a sender's label
gets the style classifier's. What stays is recorded with its provenance.
An arrival that is no longer offered (its file left the inbox, its owner withdrew consent) is removed with
its pieces at the next ingest, so it never reaches another dataset.

``received/`` beside the dataset files: ``provenance.jsonl`` (one line per kept piece: origin, owner, label and
where the label came from, when it was received) and ``decisions.jsonl`` (every decision, appended).
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import symusic

from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import SourceUnit
from museforge.data.formats import ReaderLimits, list_units
from museforge.data.manifest import MANIFEST, PieceRecord, load_manifest, write_manifest
from museforge.io import atomic_write_jsonl, read_jsonl
from museforge.lab.styles import UNLABELLED, StyleClassifier
from museforge.metrics.originality import OriginalityIndex, check_originality, is_near_copy
from museforge.store.records import Upload

PROVENANCE = "provenance.jsonl"
DECISIONS = "decisions.jsonl"
COLLECTION = "received"
_STYLE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


def inbox_dir(var_dir: Path) -> Path:
    return var_dir / "receive" / "inbox"


def received_dir(var_dir: Path) -> Path:
    return var_dir / "resource" / COLLECTION


@dataclass(frozen=True)
class Arrival:
    """One offered file: ``origin`` (``inbox/<path>`` or ``upload/<id>``) is its provenance and build key."""

    origin: str
    path: Path
    owner: str | None = None
    style: str | None = None  # the sender's label; None: the classifier's


def inbox_arrivals(inbox: Path) -> list[Arrival]:
    """Every file under the inbox (hidden ones excepted); one in a sub-folder named like a style (lower case,
    e.g. ``inbox/folk/tune.abc``) carries that label."""
    if not inbox.is_dir():
        return []
    out = []
    for path in sorted(inbox.rglob("*")):
        relative = path.relative_to(inbox)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            folder = relative.parts[0] if len(relative.parts) > 1 else None
            style = folder if folder is not None and _STYLE.match(folder) else None
            out.append(Arrival(f"inbox/{relative.as_posix()}", path, style=style))
    return out


def upload_arrivals(var_dir: Path, uploads: Iterable[Upload]) -> list[Arrival]:
    """The uploads whose owners ticked "let museforge learn from this" (the caller passes those)."""
    out = []
    for upload in uploads:
        style = upload.meta.get("learn_style")
        label = style if isinstance(style, str) and _STYLE.match(style) else None
        out.append(Arrival(f"upload/{upload.id}", var_dir / upload.path, owner=upload.owner, style=label))
    return out


@dataclass
class IngestReport:
    """What one ingest did; ``accepted`` are the ids of the pieces it added."""

    offered: int = 0
    converted: int = 0
    accepted: list[str] = field(default_factory=list)
    duplicates: int = 0
    copies: int = 0
    outliers: int = 0  # pieces unlike any music the corpus knows (`StyleClassifier.is_outlier`)
    rejected: int = 0  # arrivals that could not be read (reasons in rejects.jsonl)
    withdrawn: list[str] = field(default_factory=list)
    styles: dict[str, int] = field(default_factory=dict)  # accepted pieces per style
    pieces: int = 0  # all pieces received so far

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest(
    arrivals: list[Arrival],
    received: Path,
    corpus: list[Path],
    index: OriginalityIndex | None = None,
    classifier: StyleClassifier | None = None,
    limits: ReaderLimits | None = None,
) -> IngestReport:
    """Bring ``received`` up to date with what is offered now (see the module's docstring)."""
    limits = limits or ReaderLimits()
    before = {r.id for r in load_manifest(received)} if (received / MANIFEST).exists() else set()
    units = _units(arrivals, limits)
    build = build_dataset(units, received, BuildOptions(workers=1, progress=False, prune=True, limits=limits))
    report = IngestReport(
        offered=len(arrivals), converted=build.converted, rejected=build.rejected, duplicates=build.duplicates
    )
    by_origin = {a.origin: a for a in arrivals}
    corpus_ids = {r.id for folder in corpus for r in load_manifest(folder)}
    provenance = {row["id"]: row for row in read_jsonl(received / PROVENANCE)}
    kept, decisions = [], []
    for record in load_manifest(received):
        if record.id in before:
            kept.append(record)
            continue
        verdict = _judge(record, received, corpus_ids, index, classifier)
        arrival = by_origin[record.source]
        decisions.append({"id": record.id, "origin": arrival.origin, "decision": verdict or "accepted"})
        if verdict is not None:
            report.duplicates += verdict == "duplicate"
            report.copies += verdict == "copy"
            report.outliers += verdict == "outlier"
            continue
        provenance[record.id] = _label(record, arrival, received, classifier)
        kept.append(record)
        report.accepted.append(record.id)
    gone = before - {r.id for r in load_manifest(received)}  # withdrawn, or replaced by a changed file
    report.withdrawn = sorted(i for i in gone if provenance.get(i, {}).get("origin") not in by_origin)
    decisions += [
        {"id": i, "origin": provenance.get(i, {}).get("origin"), "decision": "withdrawn"}
        for i in report.withdrawn
    ]
    _save(received, kept, provenance, decisions)
    report.styles = dict(Counter(r.style for r in kept if r.id in set(report.accepted)))
    report.pieces = len(kept)
    return report


def _units(arrivals: list[Arrival], limits: ReaderLimits) -> list[SourceUnit]:
    """Each arrival's units (an ABC file's tunes; anything unreadable is one unit the build rejects)."""
    return [
        SourceUnit(unit, COLLECTION, arrival.style or "user", arrival.origin)
        for arrival in arrivals
        for unit in list_units(arrival.path, limits)
    ]


def _judge(
    record: PieceRecord,
    received: Path,
    corpus_ids: set[str],
    index: OriginalityIndex | None,
    classifier: StyleClassifier | None,
) -> str | None:
    """``"duplicate"``, ``"copy"``, ``"outlier"`` or None for a piece worth keeping."""
    if record.id in corpus_ids:
        return "duplicate"
    score = symusic.Score(str(record.midi_path(received)))
    if index is not None and (index.holds(score) or is_near_copy(check_originality(score, index))):
        return "copy"
    if classifier is not None and classifier.is_outlier(classifier.predict(score)[1]):
        return "outlier"
    return None


def _label(
    record: PieceRecord, arrival: Arrival, received: Path, classifier: StyleClassifier | None
) -> dict[str, Any]:
    """The provenance line of a kept piece; labels an unlabelled one with the classifier (in place)."""
    source, distance = "sender", None
    if record.style in UNLABELLED and classifier is not None:
        style, distance = classifier.predict(symusic.Score(str(record.midi_path(received))))
        if style is not None:
            record.style, source = style, "classifier"
    elif record.style in UNLABELLED:
        source = "none"
    return {
        "id": record.id,
        "origin": arrival.origin,
        "owner": arrival.owner,
        "style": record.style,
        "label_source": source,
        "distance": distance,
        "received_at": time.time(),
    }


def _save(
    received: Path, kept: list[PieceRecord], provenance: dict[str, dict[str, Any]], decisions: list[dict]
) -> None:
    """Write the kept pieces' manifest and provenance, append the decisions, delete dropped pieces' MIDI."""
    ids = {r.id for r in kept}
    for path in (received / "midi").glob("*/*.mid"):
        if path.stem not in ids:
            path.unlink()
    write_manifest(received, kept)
    atomic_write_jsonl(received / PROVENANCE, (provenance[i] for i in sorted(ids)))
    with (received / DECISIONS).open("a", encoding="utf-8") as log:
        for row in decisions:
            log.write(json.dumps({**row, "at": time.time()}, sort_keys=True) + "\n")
