"""`museforge data build`: convert a source into a dataset folder, in parallel, cached and resumable.

Every unit (file, or ABC tune) is converted in a worker process into a normalized MIDI file plus a manifest
record. Progress is journaled as it happens: each finished unit appends one line to ``sources.jsonl`` (its
fingerprint and the piece ids it produced, or its reject reason) after its pieces were appended to
``manifest.jsonl`` and their MIDI written atomically. So an interrupted build loses nothing, and re-running
converts only units that are new or whose bytes changed. At the end both journals are compacted atomically and
``rejects.jsonl`` and ``build.json`` are written.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import symusic
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from museforge.data.corpora import SourceUnit
from museforge.data.formats import InputError, ReaderLimits, read_unit
from museforge.data.manifest import MANIFEST, REJECTS, SOURCES, PieceRecord
from museforge.data.metadata import content_id, describe, family_id, split_of
from museforge.io import atomic_write_bytes, atomic_write_json, atomic_write_jsonl, read_jsonl

# Bump when conversion or metadata changes, so existing datasets re-convert instead of keeping stale records.
CONVERTER_VERSION = "1"
# Bump when the readers learn a new repair: earlier rejects are then tried again (and only they).
REPAIR_VERSION = 2


class BuildInterrupted(RuntimeError):
    """The build stopped early (Ctrl-C or a dead worker); its finished work is saved and a re-run resumes."""


@dataclass
class BuildOptions:
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    limit: int | None = None  # at most this many units per collection (a quick, balanced sample)
    limits: ReaderLimits = field(default_factory=ReaderLimits)  # what one file may expand or allocate
    valid: float = 0.1
    test: float = 0.1
    progress: bool = True
    prune: bool = False  # drop units (and their pieces) an earlier build had that are not offered any more


@dataclass
class BuildReport:
    out: Path
    units: int = 0
    converted: int = 0
    cached: int = 0
    new_pieces: int = 0
    duplicates: int = 0
    pruned: int = 0  # units dropped because they were not offered any more (`BuildOptions.prune`)
    rejected: int = 0  # units of the dataset that could not become pieces (this build's and earlier ones)
    pieces: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    cpu_seconds_by_collection: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def _convert(source: SourceUnit, fingerprint: str, limits: ReaderLimits) -> dict[str, Any]:
    """Worker: one unit → its piece (record + MIDI bytes) or a reject reason. Never raises for bad input."""
    start = time.process_time()
    result: dict[str, Any] = {
        "key": source.key,
        "fingerprint": fingerprint,
        "collection": source.collection,
        "pieces": [],
        "reject": None,
    }
    try:
        raw = read_unit(source.unit, limits)
        piece_id = content_id(raw.score)
        record = PieceRecord(
            id=piece_id,
            family=family_id(raw.score),
            source=source.name,
            member=source.unit.member,
            title=_title(raw.title, source),
            composer=raw.composer or source.composer,
            collection=source.collection,
            style=source.style,
            genres=list(source.genres),
            repairs=list(raw.repairs),
            **describe(raw.score),
        )
        result["pieces"].append((record.to_dict(), raw.score.dumps_midi()))
    except InputError as exc:
        result["reject"] = str(exc)
    except Exception as exc:  # a reader bug must not stop a 15,000-piece build; it is reported like bad input
        result["reject"] = f"unexpected {type(exc).__name__}: {exc}"
    result["seconds"] = time.process_time() - start
    return result


def _title(title: str | None, source: SourceUnit) -> str:
    """The notated title, else the file name (music21 reports a MusicXML file's name as its title)."""
    if title and title != source.unit.path.name:
        return title
    stem = source.unit.path.stem
    return f"{stem} #{source.unit.member}" if source.unit.member is not None else stem


def limit_per_collection(units: Iterable[SourceUnit], limit: int | None) -> list[SourceUnit]:
    if limit is None:
        return list(units)
    counts: Counter[str] = Counter()
    out = []
    for su in units:
        if counts[su.collection] < limit:
            counts[su.collection] += 1
            out.append(su)
    return out


def _run(jobs: list[tuple[SourceUnit, str]], options: BuildOptions) -> Iterator[dict[str, Any]]:
    """Convert jobs in worker processes (or inline for one worker), yielding results as they finish."""
    if options.workers <= 1 or len(jobs) <= 1:
        for su, fp in jobs:
            yield _convert(su, fp, options.limits)
        return
    with ProcessPoolExecutor(max_workers=options.workers) as pool:
        pending: set[Future[dict[str, Any]]] = set()
        queue = iter(jobs)
        try:
            while True:
                while len(pending) < options.workers * 4:
                    job = next(queue, None)
                    if job is None:
                        break
                    pending.add(pool.submit(_convert, job[0], job[1], options.limits))
                if not pending:
                    return
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        finally:
            for future in pending:
                future.cancel()


def build_dataset(units: list[SourceUnit], out: Path, options: BuildOptions | None = None) -> BuildReport:
    """Convert ``units`` into the dataset folder ``out``, reusing everything an earlier build already did."""
    options = options or BuildOptions()
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    units = limit_per_collection(units, options.limit)
    report = BuildReport(out=out, units=len(units))

    sources = {row["key"]: row for row in read_jsonl(out / SOURCES)}
    if options.prune:
        offered = {su.key for su in units}
        report.pruned = sum(1 for key in sources if key not in offered)
        sources = {key: row for key, row in sources.items() if key in offered}
    records = {row["id"]: PieceRecord.from_dict(row) for row in read_jsonl(out / MANIFEST)}
    jobs: list[tuple[SourceUnit, str]] = []
    for su in units:
        try:
            fingerprint = f"v{CONVERTER_VERSION}:{su.unit.fingerprint()}"
        except OSError as exc:
            fingerprint = f"unreadable: {exc.strerror}"
        cached = sources.get(su.key, {})
        retry_reject = cached.get("reject") is not None and cached.get("repair_version", 1) < REPAIR_VERSION
        if cached.get("fingerprint") == fingerprint and not retry_reject:
            report.cached += 1
        else:
            jobs.append((su, fingerprint))

    cpu_by_collection: dict[str, float] = defaultdict(float)
    rejected_now = 0
    progress = Progress(
        TextColumn("[bold]converting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rejected]} rejected"),
        TimeRemainingColumn(),
        disable=not options.progress or not jobs,
    )
    try:
        with (
            progress,
            (out / MANIFEST).open("a", encoding="utf-8") as man_log,
            (out / SOURCES).open("a", encoding="utf-8") as src_log,
        ):
            task = progress.add_task("build", total=len(jobs), rejected=0)
            for result in _run(jobs, options):
                ids = []
                for record_dict, midi in result["pieces"]:
                    record = PieceRecord.from_dict(record_dict)
                    record.split = split_of(record.family, options.valid, options.test)
                    ids.append(record.id)
                    if record.id in records and record.id not in sources.get(result["key"], {}).get(
                        "ids", []
                    ):
                        report.duplicates += 1
                        continue
                    atomic_write_bytes(record.midi_path(out), midi)
                    records[record.id] = record
                    man_log.write(json.dumps(record.to_dict(), sort_keys=True) + "\n")
                    man_log.flush()
                    report.new_pieces += 1
                entry = {
                    "key": result["key"],
                    "fingerprint": result["fingerprint"],
                    "ids": ids,
                    "collection": result["collection"],
                    "reject": result["reject"],
                    "repair_version": REPAIR_VERSION,
                    "seconds": round(result["seconds"], 4),
                }
                sources[result["key"]] = entry
                src_log.write(json.dumps(entry, sort_keys=True) + "\n")
                src_log.flush()
                cpu_by_collection[result["collection"]] += result["seconds"]
                report.converted += 1
                rejected_now += result["reject"] is not None
                progress.update(task, advance=1, rejected=rejected_now)
    except (KeyboardInterrupt, BrokenProcessPool):  # Ctrl-C, or a worker killed (e.g. out of memory)
        report.interrupted = True
    finally:
        report.pieces = _compact(out, sources, records, options)
        report.rejected = sum(1 for entry in sources.values() if entry.get("reject"))
        report.seconds = round(time.perf_counter() - started, 3)
        report.cpu_seconds_by_collection = {k: round(v, 3) for k, v in sorted(cpu_by_collection.items())}
        atomic_write_json(out / "build.json", report.to_dict())
    if report.interrupted:
        raise BuildInterrupted(
            f"build of {out} interrupted after {report.converted} units; what was converted is saved: "
            "run the same command again to resume"
        )
    return report


def _compact(
    out: Path, sources: dict[str, dict[str, Any]], records: dict[str, PieceRecord], options: BuildOptions
) -> int:
    """Rewrite the journals as clean files: one line per unit and per live piece; drop orphaned MIDI."""
    live = {piece_id for entry in sources.values() for piece_id in entry.get("ids", [])}
    kept = []
    for piece_id in sorted(live):
        record = records.get(piece_id)
        if record is not None and record.midi_path(out).exists():
            if not record.family:  # a dataset built before families existed: derive it from the stored MIDI
                record.family = family_id(symusic.Score(str(record.midi_path(out))))
            record.split = split_of(record.family, options.valid, options.test)
            kept.append(record)
    atomic_write_jsonl(out / MANIFEST, (r.to_dict() for r in kept))
    atomic_write_jsonl(out / SOURCES, (sources[k] for k in sorted(sources)))
    atomic_write_jsonl(
        out / REJECTS,
        (
            {"source": k, "collection": v.get("collection"), "reason": v["reject"]}
            for k, v in sorted(sources.items())
            if v.get("reject")
        ),
    )
    kept_ids = {r.id for r in kept}
    midi_dir = out / "midi"
    if midi_dir.exists():
        for path in midi_dir.glob("*/*.mid"):
            if path.stem not in kept_ids:
                path.unlink()
    return len(kept)
