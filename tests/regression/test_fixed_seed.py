"""What a seed makes, for every family and operation, through the Python API, the CLI and the JSON API.

The shipped models, fixed seeds and fp32 weights; each result is compared with `baselines.json`, recorded
before the family redesign (issue 21), so moving code between homes cannot change the music a seed gives.
A result is compared by its first `HEAD` notes (program, start, duration, pitch, velocity): a changed default,
mask or sampling step changes them from the first bars on, while another machine's float rounding can only
flip a near-tie somewhere, rarely this early; at least `AGREE` of them must match as a multiset.
Record anew with ``MUSEFORGE_RECORD_BASELINES=1`` and say in the commit why the music changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import music21
import pytest
import symusic

from museforge.data.formats import load_score
from museforge.families.musemorphose.decode import interpolate
from museforge.families.musemorphose.sample import restyle_song
from museforge.families.serving import generate_song, get_model

BASELINES = Path(__file__).with_name("baselines.json")
RECORD = os.environ.get("MUSEFORGE_RECORD_BASELINES") == "1"
HEAD = 48
AGREE = 0.9
SEED = 7


def notes_of(midi: bytes) -> list[list[int]]:
    """Every note as [program, start, duration, pitch, velocity] in quarter-tick units, sorted."""
    score = symusic.Score.from_midi(midi).resample(480)
    return sorted(
        [t.program, n.start, n.duration, n.pitch, n.velocity] for t in score.tracks for n in t.notes
    )


def _midi(tmp: Path, work: str, measures: int | None = None) -> Path:
    """A corpus work (its first ``measures`` measures) written as MIDI: short sources keep the cases quick."""
    source = music21.corpus.getWork(work)
    if measures is not None:
        source = (
            music21.corpus.parse(work).measures(0, measures).write("musicxml", fp=tmp / "excerpt.musicxml")
        )
    path = tmp / f"{work.replace('/', '-')}.mid"
    load_score(source).dump_midi(str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Sources (a 4-bar excerpt of Bach's four-part bwv66.6, a folk tune) and the shipped models."""
    tmp = tmp_path_factory.mktemp("regression")
    names = ("remi-transformer", "performance-rnn", "musemorphose", "musegan")
    return {
        "tmp": tmp,
        "bwv": _midi(tmp, "bach/bwv66.6", 4),
        "folk": _midi(tmp, "essenFolksong/altdeu10"),
        **{name: get_model(name) for name in names},
    }


def _first(songs: list) -> bytes:
    return songs[0].score.dumps_midi()


def _cli(w: dict, *args: str) -> bytes:
    out = w["tmp"] / f"cli-{time.monotonic_ns()}.mid"
    cmd = [sys.executable, "-m", "museforge", *args, "--seed", str(SEED), "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # what --threads 1 does, for commands that lacked it
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return out.read_bytes()


def _morph(w: dict) -> tuple:
    return w["musemorphose"].checkpoint.model, w["musemorphose"].tokenizer


# Every family's generate and each operation it offers, through the Python API, the CLI and the JSON API.
CASES: dict[str, Callable[[dict], bytes]] = {
    "api/remi/generate": lambda w: _first(
        generate_song(w["remi-transformer"], style="folk", bars=4, seed=SEED)
    ),
    "api/remi/continue": lambda w: _first(
        generate_song(w["remi-transformer"], primer=w["bwv"], primer_bars=2, bars=2, seed=SEED)
    ),
    "api/remi/attributes": lambda w: _first(
        generate_song(
            w["remi-transformer"], style="chorale", bars=2, rhythm=[2, 6], polyphony=[3, 1], seed=SEED
        )
    ),
    "api/performance/generate": lambda w: _first(
        generate_song(w["performance-rnn"], seconds=4, density=4, seed=SEED)
    ),
    "api/performance/continue": lambda w: _first(
        generate_song(w["performance-rnn"], primer=w["folk"], seconds=3, seed=SEED)
    ),
    "api/musemorphose/generate": lambda w: _first(
        generate_song(w["musemorphose"], style="folk", bars=4, seed=SEED)
    ),
    "api/musemorphose/restyle": lambda w: _first(
        restyle_song(w["musemorphose"], w["bwv"], rhythm=2, polyphony=-1, seed=SEED)
    ),
    "api/musemorphose/interpolate": lambda w: interpolate(
        *_morph(w), w["bwv"], w["folk"], steps=3, seed=SEED
    )[1].score.dumps_midi(),
    "api/musegan/generate": lambda w: _first(generate_song(w["musegan"], style="chorale", bars=4, seed=SEED)),
    "api/musegan/accompany": lambda w: _first(
        generate_song(w["musegan"], style="chorale", accompany=w["bwv"], tracks="soprano:0", seed=SEED)
    ),
    "api/musegan/morph": lambda w: _first(generate_song(w["musegan"], style="chorale", walk=2, seed=SEED)),
    "cli/remi/generate": lambda w: _cli(
        w,
        "generate",
        "--model",
        "remi-transformer",
        "--style",
        "fiddle",
        "--bars",
        "4",
        "--precision",
        "fp32",
    ),
    "cli/performance/generate": lambda w: _cli(w, "generate", "--model", "performance-rnn", "--seconds", "4"),
    "cli/musegan/generate": lambda w: _cli(
        w, "generate", "--model", "musegan", "--genre", "renaissance", "--bars", "4"
    ),
    "cli/musemorphose/transfer": lambda w: _cli(
        w, "transfer", str(w["bwv"]), "--rhythm", "+2", "--precision", "fp32"
    ),
    "web/remi/generate": lambda w: _job(w, {"model": "remi-transformer", "style": "folk", "bars": 4}),
    "web/performance/generate": lambda w: _job(w, {"model": "performance-rnn", "seconds": 4}),
    "web/musegan/generate": lambda w: _job(w, {"model": "musegan", "style": "chorale", "bars": 4}),
    "web/remi/continue": lambda w: _job(
        w, {"model": "remi-transformer", "operation": "continue", "source_upload": _upload(w), "bars": 2}
    ),
}


@pytest.fixture(scope="module")
def web(world) -> Iterator[dict]:
    """The web app on a real store, with the shipped models in fp32, as a script would call its JSON API."""
    from fastapi.testclient import TestClient

    from museforge.web import Settings, create_app
    from museforge.web.security import CSRF_HEADER

    settings = Settings(var_dir=world["tmp"] / "var", precision="fp32", workers=1, _env_file=None)
    with TestClient(create_app(settings)) as client:
        token = client.get("/api/v1/auth/session").json()["csrf_token"]
        yield {"client": client, "headers": {CSRF_HEADER: token}}


def _job(w: dict, body: dict) -> bytes:
    client = w["web"]["client"]
    made = client.post("/api/v1/jobs", json={**body, "seed": SEED}, headers=w["web"]["headers"])
    assert made.status_code == 202, made.text
    for _ in range(3000):
        state = client.get(f"/api/v1/jobs/{made.json()['id']}").json()
        if state["status"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert state["status"] == "done", state
    return client.get(f"/api/v1/songs/{state['song_ids'][0]}/midi").content


def _upload(w: dict) -> str:
    file = {"file": ("bwv66.6.mid", w["bwv"].read_bytes())}
    sent = w["web"]["client"].post("/api/v1/uploads", files=file, headers=w["web"]["headers"])
    assert sent.status_code == 201, sent.text
    return sent.json()["id"]


def _agreement(got: list[list[int]], want: list[list[int]]) -> float:
    a, b = Counter(map(tuple, got[:HEAD])), Counter(map(tuple, want[:HEAD]))
    return sum((a & b).values()) / max(1, max(sum(a.values()), sum(b.values())))


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_fixed_seed_makes_the_recorded_music(case, request, world):
    w = {**world, "web": request.getfixturevalue("web")} if case.startswith("web/") else world
    notes = notes_of(CASES[case](w))
    if RECORD:
        recorded = json.loads(BASELINES.read_text()) if BASELINES.exists() else {}
        recorded[case] = {"notes": len(notes), "head": notes[:HEAD]}
        BASELINES.write_text(json.dumps(recorded, indent=0, sort_keys=True) + "\n")
        pytest.skip(f"recorded {case} in {BASELINES.name}")
    want = json.loads(BASELINES.read_text())[case]["head"]
    agree = _agreement(notes, want)
    assert agree >= AGREE, f"{case} no longer makes its recorded music: {agree:.0%} of its first notes agree"


def test_every_case_has_a_baseline():
    assert set(json.loads(BASELINES.read_text())) == set(CASES)
