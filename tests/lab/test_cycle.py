"""Lab cycles over a tiny REMI Transformer trained here on real chorales and folk tunes: a new style is learned
and promoted, poison is rejected with its reason, a cycle killed mid-training leaves production serving and
the next one resumes it."""

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import symusic

from lab.conftest import GATE, MODEL
from museforge.data.manifest import load_manifest
from museforge.lab.cycle import STATE, CycleOptions, LabBusy, update
from museforge.lab.gate import GateSettings
from museforge.lab.heldout import HELDOUT
from museforge.models.checkpoint_files import WEIGHTS_FILE
from museforge.models.zoo import MODELS_DIR_ENV, locate_model, registry

pytestmark = pytest.mark.xdist_group("lab_cycle")


def _drop(lab, style, units):
    inbox = lab.var / "receive" / "inbox" / style
    inbox.mkdir(parents=True, exist_ok=True)
    for i, unit in enumerate(units):
        (inbox / f"tune{i}.abc").write_text(unit.unit.text, encoding="utf-8")


def test_a_new_style_is_learned_and_promoted_and_serves(world, lab):
    _drop(lab, "fiddle", world[2])
    result = update(lab, [], CycleOptions(max_steps=40, gate=GATE), log=lambda _: None)
    production, candidate = result["metrics"]["production"], result["metrics"]["candidate"]
    assert candidate["new_nll"] < production["new_nll"]  # it learned the style it had not seen
    assert result["decision"] == "promoted" and result["reasons"] == [] and result["candidate"] == 2
    assert locate_model(MODEL)[2] == 2 and registry().get(MODEL, 2).gate["reasons"] == []
    assert (lab.var / "resource" / "registry" / MODEL / "v2" / HELDOUT / "manifest.jsonl").is_file()
    again = update(lab, [], CycleOptions(max_steps=40, gate=GATE), log=lambda _: None)
    assert again["decision"] == "skipped" and again["reasons"] == ["nothing new arrived"]
    assert [v.number for v in registry().versions(MODEL)] == [1, 2]


def test_poison_is_rejected_with_its_reasons_before_any_training(world, lab):
    inbox = lab.var / "receive" / "inbox" / "folk"
    inbox.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(24):  # random notes: any pitch, any length, anywhere
        score = symusic.Score(480)
        track = symusic.Track(program=0)
        for _ in range(120):
            track.notes.append(symusic.Note(int(rng.integers(0, 480 * 32)), int(rng.integers(10, 2000)),
                                            int(rng.integers(21, 109)), 80))  # fmt: skip
        score.tracks.append(track)
        score.dump_midi(str(inbox / f"noise{i}.mid"))
    one = next(iter(load_manifest(world[0], "train")))
    for i in range(500):  # one piece 500 times: it is the corpus's, so it adds nothing
        shutil.copy(one.midi_path(world[0]), inbox / f"same{i}.mid")
    result = update(lab, [], CycleOptions(max_steps=60, gate=GATE), log=lambda _: None)
    assert result["decision"] == "rejected" and result["candidate"] is None
    assert result["reasons"] == [
        "no new piece was accepted",
        "500 new piece(s) refused as duplicates of corpus pieces or of each other",
        "24 new piece(s) refused as unlike any music of the corpus (outliers)",
    ]
    assert [v.number for v in registry().versions(MODEL)] == [1] and locate_model(MODEL)[2] == 1


def test_one_cycle_at_a_time(lab):
    lab.work.mkdir(parents=True)
    with (lab.work / ".lock").open("a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(LabBusy, match="already running"):
            update(lab, [], CycleOptions(), log=lambda _: None)


def test_a_cycle_killed_mid_training_leaves_production_and_the_next_resumes(world, lab):
    _drop(lab, "fiddle", world[2][:12])
    env = {**os.environ, "MUSEFORGE_VAR_DIR": str(lab.var), MODELS_DIR_ENV: str(world[1])}
    command = [sys.executable, "-m", "museforge", "lab", "update", "--model", MODEL, "--max-steps", "80",
               "--corpus", str(world[0]), "--threads", "1"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while not list(lab.work.glob("runs/*/last/model.safetensors")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)
    assert process.poll() is None, process.stdout.read().decode()
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert locate_model(MODEL)[2] == 1 and json.loads((lab.work / STATE).read_text())["stage"] == "fine-tune"

    lines = []
    strict = GateSettings(n_samples=2, bars=2, min_new_gain=100.0)  # no candidate can pass: it must be kept
    result = update(lab, [], CycleOptions(max_steps=80, gate=strict), log=lines.append)
    assert any("resuming" in line for line in lines) and not (lab.work / STATE).exists()
    assert result["decision"] == "rejected" and result["candidate"] == 2
    assert any("did not improve" in r or "no held-out new music" in r for r in result["reasons"])
    rejected = registry().get(MODEL, 2)
    assert rejected.status == "rejected" and rejected.gate["reasons"] == result["reasons"]
    assert (lab.var / "resource" / "registry" / MODEL / "v2" / WEIGHTS_FILE).is_file()
    assert locate_model(MODEL)[2] == 1
