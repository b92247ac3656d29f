"""The lab on a timer inside the server: a cycle runs in a child process on the schedule, never in a request."""

import json
import shutil
import time

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from museforge.data.build import BuildOptions, build_dataset, limit_per_collection
from museforge.data.corpora import music21_units
from museforge.lab.heldout import HELDOUT, copy_pieces, pick_heldout
from museforge.web import create_app
from web.conftest import make_settings


def test_the_server_runs_the_cycle_on_its_schedule(tmp_path, models_folder):
    corpus = tmp_path / "corpus"
    units = limit_per_collection(music21_units(["bach", "essenFolksong"]), 6)
    build_dataset(units, corpus, BuildOptions(workers=1, progress=False, valid=0.3, test=0.3))
    models = tmp_path / "models"  # the tiny model, shipping a held-out set as a gated model must
    shutil.copytree(models_folder / "remi-transformer", models / "remi-transformer")
    copy_pieces([(r, corpus) for r in pick_heldout(corpus, 2)], models / "remi-transformer" / HELDOUT, "test")
    settings = make_settings(tmp_path / "var", models, lab_schedule="every 1s", lab_corpus=corpus)
    cycles = settings.var_dir / "resource" / "lab" / "remi-transformer" / "cycles.jsonl"
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        deadline = time.monotonic() + 300
        while not cycles.is_file() and time.monotonic() < deadline:
            assert client.get("/api/v1/models").status_code == 200  # the app answers while the lab works
            time.sleep(0.5)
    line = json.loads(cycles.read_text().splitlines()[0])
    assert line["decision"] == "skipped" and line["reasons"] == ["nothing new arrived"]
    log = (settings.var_dir / "resource" / "lab" / "schedule.log").read_text()
    assert "lab update --model remi-transformer" in log and '"decision": "skipped"' in log


def test_a_schedule_that_cannot_be_read_is_refused_at_start(tmp_path, models_folder):
    with pytest.raises(ValidationError, match="HH:MM"):
        make_settings(tmp_path / "var", models_folder, lab_schedule="sometimes")
