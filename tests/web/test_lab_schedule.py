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
from museforge.store import open_repository
from museforge.store.records import Feedback
from museforge.web import create_app
from museforge.web.lab_schedule import LabScheduler
from web.conftest import api_token, finished_job, make_settings


def test_the_server_runs_the_cycle_on_its_schedule(tmp_path, models_folder):
    corpus = tmp_path / "corpus"
    units = limit_per_collection(music21_units(["bach", "essenFolksong"]), 6)
    build_dataset(units, corpus, BuildOptions(workers=1, progress=False, valid=0.3, test=0.3))
    models = tmp_path / "models"  # the tiny model, shipping a held-out set as a gated model must
    shutil.copytree(models_folder / "remi-transformer", models / "remi-transformer")
    copy_pieces([(r, corpus) for r in pick_heldout(corpus, 2)], models / "remi-transformer" / HELDOUT, "test")
    settings = make_settings(tmp_path / "var", models, lab_schedule="every 1s", lab_corpus=corpus,
                             lab_prefer_after=1)  # fmt: skip
    lab = settings.var_dir / "resource" / "lab" / "remi-transformer"
    with TestClient(create_app(settings), base_url="http://127.0.0.1") as client:
        headers = api_token(client)
        done = finished_job(client, headers, {"model": "remi-transformer", "style": "folk", "bars": 2})
        song_id = done["song_urls"][0].rsplit("/", 1)[1]
        client.post(f"/api/v1/songs/{song_id}/feedback", json={"kind": "like"}, headers=headers)
        deadline = time.monotonic() + 300
        while not (lab / "prefer.jsonl").is_file() and time.monotonic() < deadline:
            assert client.get("/api/v1/models").status_code == 200  # the app answers while the lab works
            time.sleep(0.5)
    line = json.loads((lab / "cycles.jsonl").read_text().splitlines()[0])
    assert line["decision"] == "skipped" and line["reasons"] == ["nothing new arrived"]
    preferred = json.loads((lab / "prefer.jsonl").read_text().splitlines()[0])  # one liked song: too few
    assert preferred["decision"] == "skipped" and "at least 8 needed" in preferred["reasons"][0]
    log = (settings.var_dir / "resource" / "lab" / "schedule.log").read_text()
    assert "lab update --model remi-transformer" in log and '"decision": "skipped"' in log
    assert "lab prefer --model remi-transformer" in log
    repo = open_repository(settings.var_dir)
    scheduler = LabScheduler(settings, ["remi-transformer"], repo).cycle
    assert not scheduler._prefer_due("remi-transformer")  # nothing new since the run it started
    repo.record_feedback(feedback=Feedback("play_end", "user:x", song_id, "remi-transformer", 1, {}))
    assert scheduler._prefer_due("remi-transformer") and not scheduler._prefer_due("remi-transformer")
    repo.close()


def test_a_schedule_that_cannot_be_read_is_refused_at_start(tmp_path, models_folder):
    with pytest.raises(ValidationError, match="HH:MM"):
        make_settings(tmp_path / "var", models_folder, lab_schedule="sometimes")
