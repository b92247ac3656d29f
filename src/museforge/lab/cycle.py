"""One lab cycle for one model: ingest what arrived → extend the lab's dataset → fine-tune a candidate from
production on the new pieces plus replayed corpus pieces → measure both on production's held-out set → gate →
promote or reject (`museforge lab update`).

State lives under ``var/resource/lab/<model>/``: ``dataset/`` (the lab's dataset; each piece keeps its own
split, so splits never move as it grows), ``heldout/`` and ``new-heldout/`` (what the gate scores), ``runs/``
(one fine-tuning run per cycle), ``cycle.json`` (the cycle under way and its stage) and ``cycles.jsonl`` (one
line per finished cycle). One cycle per model at a time: an exclusive ``flock`` that the kernel releases if
the process dies. Production changes only by the registry's atomic promotion at the very end, so a cycle
killed midway leaves production serving; the next cycle finds ``cycle.json`` and resumes from its stage (the
fine-tuning run from its last checkpoint), or records the cycle as failed with the reason and starts afresh.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from museforge.data.manifest import MANIFEST, PieceRecord, load_manifest
from museforge.families import Family, get_family, load_checkpoint
from museforge.families.training import resume_run, start_run
from museforge.io import atomic_write_json
from museforge.lab.gate import GateSettings, decide, measure, tokenized_for
from museforge.lab.heldout import HELDOUT, copy_pieces
from museforge.lab.receive import Arrival, IngestReport, inbox_arrivals, inbox_dir, ingest, received_dir
from museforge.lab.styles import StyleClassifier
from museforge.metrics.originality import OriginalityIndex
from museforge.models.versions import Registry, Version
from museforge.models.zoo import CARD_FILE, ORIGINALITY_FILE

Log = Callable[[str], None]
STATE = "cycle.json"
CYCLES = "cycles.jsonl"


class LabBusy(RuntimeError):
    """Another cycle of the same model holds the lab's lock."""


@dataclass
class CycleOptions:
    max_steps: int = 200
    preset: str | None = None  # default: the family's preset whose window is the checkpoint's context
    replay: float = 2.0  # corpus training pieces replayed per new training piece (so it does not forget)
    min_replay: int = 16
    seed: int = 0
    device: str = "cpu"
    gate: GateSettings = field(default_factory=GateSettings)


@dataclass
class Lab:
    """One model's lab under a var folder."""

    var: Path
    model: str
    registry: Registry
    corpus: Path  # a built dataset: what the model learned from (replayed, and deduplicated against)

    @property
    def work(self) -> Path:
        return self.var / "resource" / "lab" / self.model


def update(lab: Lab, arrivals: list[Arrival], options: CycleOptions | None = None, log: Log = print) -> dict:
    """Run one cycle (see the module's docstring) and return its result, the line `lab update` prints.

    ``arrivals`` are the uploads offered to the lab (`museforge.lab.receive.upload_arrivals`); the inbox's
    files are added here."""
    options = options or CycleOptions()
    shipped = lab.registry.path(lab.model, lab.registry.production(lab.model)) / HELDOUT
    if not (shipped / MANIFEST).is_file():
        raise ValueError(
            f"{lab.model} ships no held-out set ({shipped}): the gate would have nothing to compare candidates on "
            "(make one with museforge.lab.heldout.make_heldout)"
        )
    with locked(lab):
        state = _state(lab, log)
        if state is None:
            started = time.perf_counter()
            production = lab.registry.production(lab.model)
            report = _ingest(lab, production, [*inbox_arrivals(inbox_dir(lab.var)), *arrivals], log)
            if not report.accepted:
                return _refused(lab, report)
            ingested = time.perf_counter()
            state = _begin(lab, production, options, report)
            state["seconds"] = {"ingest": ingested - started, "dataset": time.perf_counter() - ingested}
        return _finish(lab, state, options, log)


def _ingest(lab: Lab, production: Version, arrivals: list[Arrival], log: Log) -> IngestReport:
    index_file = lab.registry.path(lab.model, production) / ORIGINALITY_FILE
    index = OriginalityIndex.load(index_file) if index_file.is_file() else None
    log(f"ingesting {len(arrivals)} offered file(s)")
    report = ingest(arrivals, received_dir(lab.var), [lab.corpus], index, _classifier(lab.corpus))
    log(
        f"accepted {len(report.accepted)}, duplicates {report.duplicates}, copies {report.copies}, "
        f"rejected {report.rejected}, withdrawn {len(report.withdrawn)}"
    )
    return report


def _refused(lab: Lab, report: IngestReport) -> dict[str, Any]:
    """The result of a cycle whose arrivals added nothing: skipped if nothing new came, else rejected with why."""
    refused = {"duplicates of corpus pieces or of each other": report.duplicates, "near-copies of training pieces":
               report.copies, "unlike any music of the corpus (outliers)": report.outliers,
               "unreadable (see rejects.jsonl)": report.rejected if report.converted else 0}  # fmt: skip
    reasons = [f"{n} new piece(s) refused as {why}" for why, n in refused.items() if n]
    state = {"ingest": report.to_dict()}
    if not report.converted or not reasons:
        return _result(lab, state, "skipped", ["nothing new arrived"], {})
    return _result(lab, state, "rejected", ["no new piece was accepted", *reasons], {})


def _classifier(corpus: Path) -> StyleClassifier | None:
    """The style classifier fitted on the corpus's training pieces (None when it holds fewer than two styles)."""
    try:
        return StyleClassifier.fit([(corpus, r) for r in load_manifest(corpus, "train")])
    except ValueError:
        return None


def _begin(lab: Lab, production: Version, options: CycleOptions, report: IngestReport) -> dict[str, Any]:
    """Assemble the lab's dataset and record the cycle's state before any training starts."""
    tokenizer = json.loads((lab.registry.path(lab.model, production) / "tokenizer.json").read_text())
    data = _assemble(lab, tokenizer.get("config", {}).get("styles"), options)
    cycle = time.strftime("%Y%m%d-%H%M%S")
    state = {
        "cycle": cycle,
        "stage": "fine-tune",
        "parent": production.number,
        "run": str(lab.work / "runs" / cycle),
        "data": data,
        "ingest": report.to_dict(),
        "started": time.time(),
        "pid": os.getpid(),
    }
    atomic_write_json(lab.work / STATE, state)
    return state


def _assemble(lab: Lab, styles: list[str] | None, options: CycleOptions) -> dict[str, Any]:
    """The lab's dataset: every received piece, corpus training pieces to replay and corpus validation pieces.
    A style the production tokenizer lacks is trained as "user" (its name kept in the piece's genres)."""
    received_folder = received_dir(lab.var)
    received = load_manifest(received_folder)
    new_train = [r for r in received if r.split == "train"]
    old_train = load_manifest(lab.corpus, "train")
    n_replay = min(len(old_train), max(options.min_replay, round(options.replay * len(new_train))))
    chosen = np.random.default_rng(options.seed).choice(len(old_train), n_replay, replace=False)
    replay = [old_train[i] for i in sorted(chosen.tolist())]
    valid = load_manifest(lab.corpus, "valid")[: max(8, len(new_train))]

    def trainable(record: PieceRecord) -> PieceRecord:
        if styles is None or record.style in styles:
            return record
        return replace(record, style="user", genres=[*record.genres, record.style])

    dataset = lab.work / "dataset"
    shutil.rmtree(dataset, ignore_errors=True)
    pieces = [(r, lab.corpus) for r in [*replay, *valid]] + [
        (trainable(r), received_folder) for r in received
    ]
    copy_pieces(pieces, dataset)
    shutil.rmtree(lab.work / "new-heldout", ignore_errors=True)
    copy_pieces(
        [(r, received_folder) for r in received if r.split != "train"], lab.work / "new-heldout", "test"
    )
    return {
        "manifest_sha256": hashlib.sha256((dataset / MANIFEST).read_bytes()).hexdigest(),
        "pieces": {
            "new": len(received),
            "new_train": len(new_train),
            "replay": len(replay),
            "valid": len(valid),
        },
        "styles": dict(Counter(r.style for r in received)),
    }


def _finish(lab: Lab, state: dict[str, Any], options: CycleOptions, log: Log) -> dict[str, Any]:
    """Fine-tune (or resume), add the candidate, gate it, promote or reject; then the cycle is over."""
    parent = lab.registry.get(lab.model, state["parent"])
    parent_dir = lab.registry.path(lab.model, parent)
    seconds = state.setdefault("seconds", {})
    if state["stage"] == "fine-tune":
        started = time.perf_counter()
        best = _fine_tune(lab, parent_dir, Path(state["run"]), options, log)
        candidate = lab.registry.add(lab.model, best, parent.number, run=state["run"], data=state["data"])
        _complete(lab, candidate, parent_dir, state)
        seconds["fine_tune"] = time.perf_counter() - started
        state.update(stage="gate", candidate=candidate.number)
        atomic_write_json(lab.work / STATE, state)
    candidate = lab.registry.get(lab.model, state["candidate"])
    log(f"gating version {candidate.number} against version {parent.number}")
    started = time.perf_counter()
    metrics = _measure_both(lab, parent, candidate, options.gate)
    seconds["gate"] = time.perf_counter() - started
    reasons = decide(metrics["production"], metrics["candidate"], options.gate)
    gate = {"reasons": reasons, "settings": options.gate.to_dict(), **metrics}
    lab.registry.update(lab.model, candidate.number, gate=gate, metrics=metrics["candidate"])
    if reasons:
        lab.registry.update(lab.model, candidate.number, status="rejected", note="; ".join(reasons))
    else:
        lab.registry.promote(lab.model, candidate.number, note=f"promoted by lab cycle {state['cycle']}")
    return _result(lab, state, "rejected" if reasons else "promoted", reasons, metrics, candidate.number)


def _fine_tune(lab: Lab, parent_dir: Path, run: Path, options: CycleOptions, log: Log) -> Path:
    """Train the candidate from the parent's weights (resuming the run if a killed cycle left one)."""
    ckpt = load_checkpoint(parent_dir)
    dataset = tokenized_for(lab.work / "dataset", ckpt.tokenizer)
    if (run / "last").exists():
        log(f"resuming the fine-tuning run {run}")
        resume_run(run, device=options.device)
    else:
        shutil.rmtree(run, ignore_errors=True)
        family = get_family(ckpt.model_name)
        preset = options.preset or _preset(family, ckpt.config.to_dict())
        steps = options.max_steps
        overrides = {
            "max_steps": steps,
            "progress": False,
            "seed": options.seed,
            "lr": family.recipe(preset).train.get("lr", 3e-4) * 0.5,  # fine-tuning: half the peak rate
            "warmup_steps": max(1, steps // 10),
            "checkpoint_every": max(1, steps // 4),
        }
        log(f"fine-tuning {lab.model} for up to {steps} steps (preset {preset})")
        start_run(family.name, dataset, preset, run, device=options.device, train_overrides=overrides,
                  init_from=parent_dir)  # fmt: skip
    return run / "best" if (run / "best").exists() else run / "last"


def _preset(family: Family, config: dict[str, Any]) -> str:
    """The family's preset whose training window is the checkpoint's context (the model's own recipe)."""
    context = config.get("max_seq_len")
    return next((name for name, spec in family.presets.items() if spec.seq_len == context), "small")


def _complete(lab: Lab, candidate: Version, parent_dir: Path, state: dict[str, Any]) -> None:
    """Give the candidate what a served model carries: the parent's held-out set and card, and an originality
    index of everything it trained on (the parent's plus the new training pieces)."""
    folder = lab.registry.path(lab.model, candidate)
    shutil.copytree(parent_dir / HELDOUT, folder / HELDOUT, dirs_exist_ok=True)
    received = received_dir(lab.var)
    new = [r.midi_path(received) for r in load_manifest(received, "train")]
    index, _ = OriginalityIndex.from_files(new, source="lab: new pieces")
    parent_index = parent_dir / ORIGINALITY_FILE
    if parent_index.is_file():
        index = index.merged(OriginalityIndex.load(parent_index))
    index.save(folder / ORIGINALITY_FILE)
    card = (parent_dir / CARD_FILE).read_text(encoding="utf-8") if (parent_dir / CARD_FILE).is_file() else ""
    styles = ", ".join(f"{k} {v}" for k, v in sorted(state["data"]["styles"].items()))
    (folder / CARD_FILE).write_text(
        f"{card.rstrip()}\n\n## Lab version {candidate.number}\nFine-tuned by lab cycle {state['cycle']} from "
        f"version {candidate.parent} on {state['data']['pieces']['new']} received pieces ({styles}) with "
        f"{state['data']['pieces']['replay']} replayed corpus pieces.\n",
        encoding="utf-8",
    )


def _measure_both(
    lab: Lab, parent: Version, candidate: Version, settings: GateSettings
) -> dict[str, dict[str, Any]]:
    """Both versions on the parent's held-out set and the held-out new music (tokenized once, the same way)."""
    parent_dir = lab.registry.path(lab.model, parent)
    tokenizer = json.loads((parent_dir / "tokenizer.json").read_text())
    heldout = lab.work / "heldout"
    shutil.rmtree(heldout, ignore_errors=True)
    shutil.copytree(parent_dir / HELDOUT, heldout)
    tokenized_for(heldout, tokenizer)
    new = lab.work / "new-heldout"
    has_new = (new / MANIFEST).is_file() and bool(load_manifest(new))
    if has_new:
        tokenized_for(new, tokenizer)
    index_file = parent_dir / ORIGINALITY_FILE
    index = OriginalityIndex.load(index_file) if index_file.is_file() else None
    return {
        side: measure(
            lab.registry.path(lab.model, version), heldout, new if has_new else None, index, settings
        )
        for side, version in (("production", parent), ("candidate", candidate))
    }


def _result(
    lab: Lab,
    state: dict[str, Any],
    decision: str,
    reasons: list[str],
    metrics: dict[str, Any],
    candidate: int | None = None,
) -> dict[str, Any]:
    """The cycle's result; a finished cycle is logged and its state cleared."""
    result = {"model": lab.model, "candidate": candidate, "decision": decision, "reasons": reasons,
              "metrics": metrics}  # fmt: skip
    line = {**result, "cycle": state.get("cycle"), "ingest": state.get("ingest"), "seconds": state.get("seconds"),
            "finished": time.time()}  # fmt: skip
    lab.work.mkdir(parents=True, exist_ok=True)
    with (lab.work / CYCLES).open("a", encoding="utf-8") as log:
        log.write(json.dumps(line, default=str) + "\n")
    (lab.work / STATE).unlink(missing_ok=True)
    return result


def _state(lab: Lab, log: Log) -> dict[str, Any] | None:
    """The state of a cycle that was killed midway, if its stage can go on; otherwise it is logged as failed."""
    path = lab.work / STATE
    if not path.is_file():
        return None
    state = json.loads(path.read_text())
    try:
        lab.registry.get(lab.model, state["parent"])
        if state["stage"] == "gate":
            lab.registry.get(lab.model, state["candidate"])
    except (KeyError, ValueError) as exc:
        _result(lab, state, "failed", [f"interrupted during {state.get('stage')}; cannot resume: {exc}"], {})
        return None
    log(f"resuming cycle {state['cycle']}, interrupted during {state['stage']}")
    return state


@contextmanager
def locked(lab: Lab) -> Iterator[None]:
    """One cycle per model: a non-blocking exclusive lock (freed by the kernel when its process dies)."""
    lab.work.mkdir(parents=True, exist_ok=True)
    with (lab.work / ".lock").open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise LabBusy(f"a cycle of {lab.model} is already running (lock {lab.work / '.lock'})") from exc
        yield
