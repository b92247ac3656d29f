"""The lab on a timer: with ``MUSEFORGE_LAB_SCHEDULE`` set, the server runs `museforge lab update` for each
model of ``MUSEFORGE_LAB_MODELS`` on that schedule, and then `museforge lab prefer` once
``MUSEFORGE_LAB_PREFER_AFTER`` feedback signals about the model's songs arrived since its last run.

Each cycle runs in a child process started by a background thread, never in a request: a fine-tune's memory
and CPU stay out of the web process, and a crash of it cannot take the app down. Cycles run one after another;
the lab's own lock also keeps a manual `lab update` of the same model out. When the server stops, a running
cycle is terminated, and the next cycle resumes it (see `museforge.lab.cycle`). Output goes to
``var/resource/lab/schedule.log``; each cycle's result to the model's ``cycles.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time

from museforge.data.manifest import MANIFEST
from museforge.io import atomic_write_json
from museforge.lab.heldout import HELDOUT
from museforge.lab.schedule import parse_schedule
from museforge.models.zoo import MODELS_DIR_ENV
from museforge.store import Repository
from museforge.web.catalog import ModelCatalog
from museforge.web.settings import Settings

log = logging.getLogger(__name__)


class LabCycle:
    """One scheduled cycle of one model: `museforge lab update`, then `museforge lab prefer` when enough
    feedback arrived, each in a child process. The in-process `LabScheduler` and the queue's scheduled task
    (`museforge.web.worker`) both run it."""

    def __init__(self, settings: Settings, repo: Repository) -> None:
        self.settings, self.repo = settings, repo
        self.stopping = threading.Event()
        self._child: subprocess.Popen[bytes] | None = None

    def run(self, model: str) -> None:
        command = ["update", "--model", model, "--max-steps", str(self.settings.lab_max_steps)]
        if self.settings.lab_corpus is not None:
            command += ["--corpus", str(self.settings.lab_corpus)]
        self._child_run(command)
        if self.settings.lab_prefer_after and not self.stopping.is_set() and self._prefer_due(model):
            self._child_run(["prefer", "--model", model, "--max-steps", str(self.settings.lab_max_steps)])

    def stop(self) -> None:
        """Terminate a running child (the next cycle resumes it)."""
        self.stopping.set()
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()

    def _prefer_due(self, model: str) -> bool:
        """Whether enough feedback arrived since the last scheduled `lab prefer` of ``model`` (noted in
        ``var/resource/lab/<model>/prefer-due.json`` when it starts)."""
        mark = self.settings.var_dir / "resource" / "lab" / model / "prefer-due.json"
        since = json.loads(mark.read_text())["since"] if mark.is_file() else 0.0
        now = time.time()
        fresh = [f for f in self.repo.list_feedback(model=model) if f.at > since]
        if len(fresh) < self.settings.lab_prefer_after:
            return False
        atomic_write_json(mark, {"since": now})
        return True

    def _child_run(self, args: list[str]) -> None:
        var = self.settings.var_dir.resolve()
        command = [sys.executable, "-m", "museforge", "lab", *args]
        env = {**os.environ, "MUSEFORGE_VAR_DIR": str(var)}
        if self.settings.models_dir is not None:
            env[MODELS_DIR_ENV] = str(self.settings.models_dir)
        log_path = var / "resource" / "lab" / "schedule.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} lab {' '.join(args)}\n".encode())
            out.flush()
            self._child = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
            code = self._child.wait()
        log.info("lab %s ended with exit code %d (see %s)", " ".join(args), code, log_path)


class LabScheduler:
    """The thread that runs a `LabCycle` of each model on the schedule (the embedded queue's mode)."""

    def __init__(self, settings: Settings, models: list[str], repo: Repository) -> None:
        assert settings.lab_schedule is not None
        self.schedule = parse_schedule(settings.lab_schedule)
        self.models = models
        self.cycle = LabCycle(settings, repo)
        self._thread = threading.Thread(target=self._loop, name="museforge-lab", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.cycle.stop()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        stopping = self.cycle.stopping
        due = self.schedule.next_run(time.time())
        while not stopping.wait(max(0.0, due - time.time())):
            for model in self.models:
                if stopping.is_set():
                    return
                self.cycle.run(model)
            due = self.schedule.next_run(time.time())


def lab_models(settings: Settings, catalog: ModelCatalog) -> list[str]:
    """The models the schedule updates: ``MUSEFORGE_LAB_MODELS`` (comma-separated), else every served model
    whose production version ships a held-out set for the gate."""
    if settings.lab_models:
        return [m.strip() for m in settings.lab_models.split(",") if m.strip()]
    return [
        name for name, served in catalog.models.items() if (served.info.path / HELDOUT / MANIFEST).is_file()
    ]
