"""Versions of each model: the registry the lab promotes into and the app serves from.

``var/resource/registry/<model>/`` holds ``index.json`` (every version's record and the production history)
and one folder per version made by the lab, ``v<N>/``, a checkpoint in the one format. Version 1 of a model
is its shipped folder (``models/<model>``), referenced rather than copied. Exactly one version is in
production; `Registry.serving` says which folder the app loads, so a promotion or a rollback reaches a
running app at its next request without a restart. The index is rewritten atomically under a lock, so a
crash leaves either the old or the new index, never half of one.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from museforge.io import atomic_write_json

INDEX = "index.json"
STATUSES = ("production", "candidate", "rejected", "archived")
SHIPPED = "shipped"


@dataclass
class Version:
    """One version's record: where it came from, what it saw, how it measured and what the gate said."""

    number: int
    status: str
    parent: int | None = None
    created: float = field(default_factory=time.time)
    folder: str = SHIPPED  # "v<N>" under the model's registry folder, or "shipped" (models/<model>)
    data: dict[str, Any] = field(default_factory=dict)  # manifest hash and pieces per style it trained on
    run: str | None = None  # the training run folder
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None  # the gate's report (decision, reasons, both sides' metrics)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Registry:
    """The versions of every model under one folder (``var/resource/registry``)."""

    def __init__(self, root: Path, shipped: Path) -> None:
        self.root = root
        self.shipped = shipped  # the shipped models' folder: version 1 of each

    def versions(self, model: str) -> list[Version]:
        """Every version of ``model``, oldest first; a model the lab never touched has its shipped version 1."""
        return [Version(**row) for row in self._index(model)["versions"]]

    def get(self, model: str, number: int) -> Version:
        for version in self.versions(model):
            if version.number == number:
                return version
        raise ValueError(
            f"{model} has no version {number}; it has {[v.number for v in self.versions(model)]}"
        )

    def production(self, model: str) -> Version:
        return self.get(model, self._index(model)["history"][-1])

    def path(self, model: str, version: Version) -> Path:
        """The checkpoint folder of a version."""
        if version.folder == SHIPPED:
            return self.shipped / model
        return self.root / model / version.folder

    def serving(self, model: str) -> tuple[Path, int] | None:
        """The production folder and version of a model the lab has versions of; None for one it has not."""
        if not (self.root / model / INDEX).is_file():
            return None
        version = self.production(model)
        return self.path(model, version), version.number

    def add(self, model: str, checkpoint: Path, parent: int, **record: Any) -> Version:
        """Copy a checkpoint folder in as a new candidate version (files first, then the index)."""
        with self._locked(model) as index:
            number = max(v["number"] for v in index["versions"]) + 1
            version = Version(number, "candidate", parent, folder=f"v{number}", **record)
            target = self.root / model / version.folder
            staging = target.with_name(f".{version.folder}.partial")
            shutil.rmtree(staging, ignore_errors=True)
            shutil.copytree(checkpoint, staging)
            shutil.rmtree(target, ignore_errors=True)  # left by a crash before the index named it
            staging.rename(target)
            index["versions"].append(version.to_dict())
        return version

    def update(self, model: str, number: int, **changes: Any) -> Version:
        """Change a version's record (status, gate report, metrics); promotion goes through `promote`."""
        if changes.get("status") == "production":
            raise ValueError("use promote() to put a version into production")
        with self._locked(model) as index:
            row = self._row(index, number)
            row.update(changes)
        return Version(**row)

    def promote(self, model: str, number: int, note: str = "promoted") -> Version:
        """Put a version into production; the one serving before is archived (and is what rollback restores)."""
        with self._locked(model) as index:
            row = self._row(index, number)
            if row["status"] == "production":
                return Version(**row)
            self._row(index, index["history"][-1]).update(status="archived")
            row.update(status="production", note=note)
            index["history"].append(number)
        return Version(**row)

    def rollback(self, model: str) -> Version:
        """Put the previous production version back; the current one is archived with a note."""
        with self._locked(model) as index:
            if len(index["history"]) < 2:
                raise ValueError(f"{model} has no earlier production version to roll back to")
            current = index["history"].pop()
            self._row(index, current).update(status="archived", note="rolled back")
            row = self._row(index, index["history"][-1])
            row.update(status="production")
        return Version(**row)

    def _index(self, model: str) -> dict[str, Any]:
        path = self.root / model / INDEX
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        if not (self.shipped / model).is_dir():
            raise ValueError(
                f"no shipped model {model!r} in {self.shipped} and no versions of it in {self.root}"
            )
        return {
            "model": model,
            "versions": [Version(1, "production", note="shipped").to_dict()],
            "history": [1],
        }

    @contextmanager
    def _locked(self, model: str) -> Iterator[dict[str, Any]]:
        """The index to change in place, read and rewritten under an exclusive lock (released by the kernel if
        the process dies, so a crash never leaves the registry locked)."""
        folder = self.root / model
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / ".lock").open("w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            index = self._index(model)
            yield index
            atomic_write_json(folder / INDEX, index)

    @staticmethod
    def _row(index: dict[str, Any], number: int) -> dict[str, Any]:
        for row in index["versions"]:
            if row["number"] == number:
                return row
        raise ValueError(f"no version {number}; versions: {[r['number'] for r in index['versions']]}")
