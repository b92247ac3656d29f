import json
import shutil
import signal
import subprocess
import sys
import time

import symusic

from conftest import BAD_FIXTURES, FIXTURES, GOOD_FIXTURES
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import folder_units, music21_units
from museforge.data.manifest import load_manifest
from museforge.io import read_jsonl


def _source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in (*GOOD_FIXTURES, *BAD_FIXTURES):
        shutil.copy(FIXTURES / name, src / name)
    (src / "readme.txt").write_text("not music")
    return src


def test_folder_build_keeps_good_files_and_reports_bad_ones(tmp_path):
    src, out = _source(tmp_path), tmp_path / "ds"
    report = build_dataset(folder_units(src), out, BuildOptions(workers=2, progress=False))
    records = load_manifest(out)
    assert report.pieces == len(records) == len(GOOD_FIXTURES)
    assert {r.title for r in records} == {"Melody", "Piano", "Odd", "Tempo"}
    assert all(r.style == "user" and r.midi_path(out).exists() for r in records)
    rejects = {row["source"].rsplit("/", 1)[1]: row["reason"] for row in read_jsonl(out / "rejects.jsonl")}
    assert set(rejects) == {*BAD_FIXTURES, "readme.txt"}
    for name, reason in BAD_FIXTURES.items():
        assert reason in rejects[name]
    # the stored MIDI is the same music
    melody = next(r for r in records if r.title == "Melody")
    assert symusic.Score(str(melody.midi_path(out))).note_num() == melody.n_notes == 13


def test_rebuild_converts_only_new_or_changed_files_and_dedupes(tmp_path):
    src, out = _source(tmp_path), tmp_path / "ds"
    build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False))
    again = build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False))
    assert again.converted == 0 and again.cached == 8 and again.pieces == 4 and again.rejected == 4

    # a copy of a file under another name is the same music: converted, but stored once
    shutil.copy(src / "single_track.mid", src / "copy_of_melody.mid")
    # a new piece: the melody transposed up a tone
    score = symusic.Score(str(src / "single_track.mid")).shift_pitch(2)
    score.dump_midi(str(src / "new_melody.mid"))
    added = build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False))
    assert added.converted == 2 and added.duplicates == 1 and added.new_pieces == 1 and added.pieces == 5

    # changing a file replaces its piece; the old one (and its MIDI) is gone
    old = {r.id for r in load_manifest(out)}
    symusic.Score(str(src / "new_melody.mid")).shift_pitch(1).dump_midi(str(src / "new_melody.mid"))
    changed = build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False))
    assert changed.converted == 1 and changed.pieces == 5
    new = {r.id for r in load_manifest(out)}
    assert len(old - new) == 1 and len(new - old) == 1
    assert len(list((out / "midi").glob("*/*.mid"))) == 5


def test_prune_drops_what_is_not_offered_any_more_and_only_with_prune(tmp_path):
    src, out = _source(tmp_path), tmp_path / "ds"
    build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False))
    melody = next(r for r in load_manifest(out) if r.title == "Melody")
    (src / "single_track.mid").unlink()
    kept = build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False))
    assert kept.pruned == 0 and melody.id in {
        r.id for r in load_manifest(out)
    }  # a build never forgets by default
    pruned = build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False, prune=True))
    assert pruned.pruned == 1 and pruned.pieces == 3 and pruned.converted == 0
    assert melody.id not in {r.id for r in load_manifest(out)} and not melody.midi_path(out).exists()
    assert all("single_track" not in row["key"] for row in read_jsonl(out / "sources.jsonl"))


def test_music21_build_labels_styles_and_metadata(tmp_path):
    units = music21_units(["bach", "essenFolksong", "oneills1850"])
    report = build_dataset(units, tmp_path / "ds", BuildOptions(limit=3, workers=2, progress=False))
    assert report.units == 9
    records = load_manifest(tmp_path / "ds")
    assert {r.style for r in records} == {"chorale", "folk", "fiddle"}
    for r in records:
        assert r.source.startswith("music21/") and r.key and r.bars > 0 and r.n_notes > 0 and r.duration_s > 0
        assert r.time_signatures and r.tempo and r.title and r.split in ("train", "valid", "test")
    chorales = [r for r in records if r.style == "chorale"]
    assert all(r.composer == "J.S. Bach" and len(r.instruments) >= 4 for r in chorales)
    build = json.loads((tmp_path / "ds" / "build.json").read_text())
    assert set(build["cpu_seconds_by_collection"]) == {"bach", "essenFolksong", "oneills1850"}


def test_killed_build_loses_nothing_and_resumes(tmp_path):
    """Kill a build hard midway; what it finished stays readable, and a re-run converts only the rest."""
    out = tmp_path / "ds"
    code = (
        "import sys; from pathlib import Path; from museforge.data.build import BuildOptions, build_dataset;"
        "from museforge.data.corpora import music21_units;"
        "build_dataset(music21_units(['essenFolksong']), Path(sys.argv[1]),"
        " BuildOptions(limit=60, workers=1, progress=False))"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)])
    deadline = time.time() + 300
    while time.time() < deadline and len(read_jsonl(out / "sources.jsonl")) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(read_jsonl(out / "sources.jsonl"))
    assert 5 <= done < 60
    survivors = load_manifest(out)
    assert all(r.midi_path(out).exists() for r in survivors) and len(survivors) >= done - 1
    report = build_dataset(
        music21_units(["essenFolksong"]), out, BuildOptions(limit=60, workers=1, progress=False)
    )
    assert report.cached >= done - 1 and report.converted == 60 - report.cached
    assert report.pieces + report.rejected + report.duplicates == 60
    assert {r.id for r in survivors} <= {r.id for r in load_manifest(out)}


def test_rejects_are_retried_when_readers_learn_repairs(tmp_path, monkeypatch):
    from museforge.data import build

    src, out = _source(tmp_path), tmp_path / "ds"
    build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False))
    assert build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False)).converted == 0
    monkeypatch.setattr(build, "REPAIR_VERSION", build.REPAIR_VERSION + 1)
    retried = build_dataset(folder_units(src), out, BuildOptions(workers=1, progress=False))
    assert retried.converted == 4 and retried.rejected == 4 and retried.pieces == 4  # only the 4 rejects
