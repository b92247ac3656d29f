"""`museforge evaluate` end to end: folders of MIDI files, an unreadable file, report files holding the numbers."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import symusic
from typer.testing import CliRunner

from museforge.cli import app
from museforge.data.formats import load_score
from museforge.data.manifest import PieceRecord, write_manifest
from museforge.data.metadata import content_id
from museforge.metrics.controls import spearman
from museforge.metrics.evaluate import (
    analyze_files,
    analyze_scores,
    compare_analyses,
    evaluate_folder,
    reference_files,
    relative_difference,
)
from museforge.metrics.features import piece_metrics
from museforge.metrics.musegan import average_metrics, musegan_table
from museforge.metrics.voice_leading import voice_leading_metrics
from museforge.tokenizers.pianoroll import PianoRollConfig, PianoRollTokenizer


@pytest.fixture(scope="module")
def folders(tmp_path_factory, chorales, fixtures_dir):
    root = tmp_path_factory.mktemp("evaluate")
    generated, reference = root / "generated", root / "reference"
    generated.mkdir()
    reference.mkdir()
    scores = list(chorales.values())
    for i, score in enumerate(scores[:5]):
        score.dump_midi(generated / f"gen{i}.mid")
    for i, score in enumerate(scores[5:]):
        score.dump_midi(reference / f"ref{i}.mid")
    shutil.copy(fixtures_dir / "multitrack_drums.mid", generated / "band.mid")
    shutil.copy(fixtures_dir / "corrupt.mid", generated / "broken.mid")
    return generated, reference


def test_cli_writes_report_with_the_numbers(folders, tmp_path):
    generated, reference = folders
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["evaluate", str(generated), "--reference", str(reference), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_generated"] == 6 and report["n_reference"] == 5
    assert list(report["failed"]["generated"]) == [str(generated / "broken.mid")]
    expected = np.mean(
        [piece_metrics(load_score(p))["pitch_entropy"] for p in sorted(reference.glob("*.mid"))]
    )
    assert report["metrics"]["pitch_entropy"]["reference"]["mean"] == pytest.approx(expected)
    assert 0 <= report["overall"]["overlap"] <= 1
    assert set(report["features"]) >= {"pitch_class_histogram", "note_length_transition_matrix", "polyphony"}
    assert report["multitrack"]["generated"]["DP"]["Drums"] == 100.0  # only band.mid has drums
    html = (out / "report.html").read_text()
    assert "broken.mid" in html and "MuseGAN" in html and "data:image/png;base64," in html
    assert "voice leading, generated vs reference: n_voices" in " ".join(result.output.split())
    for name in ("overlap.png", "metrics.png", "densities.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


@pytest.fixture(scope="module")
def built(folders, tmp_path_factory):
    """A built dataset of the five reference chorales: ref0, ref2, ref4 train, ref1, ref3 test."""
    _, reference = folders
    root = tmp_path_factory.mktemp("built")
    records = []
    for i, path in enumerate(sorted(reference.glob("*.mid"))):
        record = PieceRecord(
            id=content_id(load_score(path)),
            source=str(path),
            style="chorale" if i < 3 else "folk",
            split="test" if i % 2 else "train",
        )
        target = record.midi_path(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        records.append(record)
    write_manifest(root, records)
    return root


def test_reference_from_built_dataset(folders, built, tmp_path):
    _, reference = folders
    assert len(reference_files(str(built))) == 5
    assert len(reference_files(f"{built}:test", style="chorale")) == 1
    with pytest.raises(ValueError, match="not a built dataset"):
        reference_files(f"{reference}:test")
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(reference),
            "--reference",
            f"{built}:train",
            "--style",
            "chorale",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n_reference"] == 2
    originality = report["originality"]
    assert originality["index"]["n_pieces"] == 3  # the train split, every style
    # The generated set is the reference folder: its three training pieces are copies, the two test ones not.
    verdicts = {Path(p).name: r["near_copy"] for p, r in originality["generated"]["per_piece"].items()}
    assert verdicts == {
        "ref0.mid": True,
        "ref1.mid": False,
        "ref2.mid": True,
        "ref3.mid": False,
        "ref4.mid": True,
    }
    assert originality["generated"]["summary"]["near_copy_share"] == pytest.approx(0.6)
    # The reference is the train split itself: no baseline, and the report says why.
    assert originality["reference"]["in_index"] == 2 and originality["reference"]["summary"]["n"] == 0
    assert "no baseline" in originality["reference"]["note"]


def test_originality_section_with_held_out_baseline(folders, built, tmp_path):
    _, reference = folders
    generated = tmp_path / "generated"
    generated.mkdir()
    load_score(reference / "ref0.mid").shift_pitch(3).dump_midi(generated / "copy.mid")
    shutil.copy(reference / "ref1.mid", generated / "new.mid")
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["evaluate", str(generated), "--reference", f"{built}:test", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "50% of generated pieces are near-copies" in result.output
    section = json.loads((out / "report.json").read_text())["originality"]
    pieces = section["generated"]["per_piece"]
    copy, new = pieces[str(generated / "copy.mid")], pieces[str(generated / "new.mid")]
    assert copy["near_copy"] and copy["copied_share"] == 1.0 and copy["phrase_share"] == 1.0
    assert not new["near_copy"] and new["longest_run"] < copy["longest_run"]
    summary = section["generated"]["summary"]
    assert summary["longest_run_max"] == copy["longest_run"]
    assert summary["longest_run_mean"] == pytest.approx((copy["longest_run"] + new["longest_run"]) / 2)
    baseline = section["reference"]
    assert (
        baseline["in_index"] == 0
        and baseline["summary"]["n"] == 2
        and baseline["summary"]["near_copy_share"] == 0
    )
    assert section["thresholds"] == {"max_run": 80, "max_phrase_share": 0.75, "max_copied_share": 0.6}
    html = (out / "report.html").read_text()
    assert "<h2>Originality</h2>" in html and "copy.mid" in html and "near-copy" in html


def test_originality_cli_index_and_check(folders, built, tmp_path):
    generated, reference = folders
    runner = CliRunner()
    index = tmp_path / "train.npz"
    result = runner.invoke(app, ["originality", "index", "--data", f"{built}:train", "--out", str(index)])
    assert result.exit_code == 0, result.output
    assert "3 pieces" in result.output
    copied = runner.invoke(app, ["originality", "check", str(reference / "ref2.mid"), "--index", str(index)])
    assert copied.exit_code == 3 and "near-copy" in copied.output, copied.output
    fresh = runner.invoke(app, ["originality", "check", str(reference / "ref3.mid"), "--index", str(index)])
    assert fresh.exit_code == 0 and "original" in fresh.output, fresh.output
    broken = runner.invoke(
        app, ["originality", "check", str(generated / "broken.mid"), "--index", str(index)]
    )
    assert broken.exit_code == 2 and "cannot read" in broken.output
    bad = runner.invoke(
        app, ["originality", "check", str(reference / "ref3.mid"), "--index", str(reference / "ref3.mid")]
    )
    assert bad.exit_code == 2 and "not an originality index" in bad.output
    # A saved index serves `evaluate` when the reference is a plain folder.
    out = tmp_path / "report"
    result = runner.invoke(
        app,
        ["evaluate", str(reference), "--reference", str(reference), "--index", str(index), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    section = json.loads((out / "report.json").read_text())["originality"]
    assert section["reference"]["in_index"] == 3 and section["reference"]["summary"]["n"] == 2


def test_streaming_analysis_keeps_no_scores(chorales):
    analysis = analyze_scores(list(chorales.values())[:3], names=["a", "b", "c"])
    assert len(analysis.musegan) == 3 and analysis.multitrack
    assert not any(isinstance(v, symusic.Score) for v in vars(analysis).values())
    report, _ = compare_analyses(analysis, analysis)
    expected = musegan_table(
        [PianoRollTokenizer().encode(s) for s in list(chorales.values())[:3]],
        [t.name for t in PianoRollConfig().tracks],
        drum_track="Drums",
    )
    assert report["multitrack"]["reference"] == expected and "originality" not in report


def test_voice_leading_of_multi_part_music_against_the_data(folders, tmp_path):
    generated, reference = folders
    result = evaluate_folder(generated, str(reference), tmp_path / "report")
    section = json.loads(result.paths["json"].read_text())["voice_leading"]
    # Five chorales and band.mid (broken.mid is unreadable); band.mid's drums are no voice.
    assert section["pieces"] == {"generated": 6, "reference": 5}
    assert section["per_piece"]["generated"][str(generated / "band.mid")]["n_voices"] == 3

    def means(folder: Path) -> dict[str, float]:
        pieces = [
            voice_leading_metrics(load_score(p))
            for p in sorted(folder.glob("*.mid"))
            if p.name != "broken.mid"
        ]
        return {name: float(np.nanmean([piece[name] for piece in pieces])) for name in pieces[0]}

    gen, ref = means(generated), means(reference)
    assert ref["n_voices"] == 4 and 0 <= ref["voice_crossing_rate"] < 0.1
    for name, measure in section["measures"].items():
        assert measure["reference"]["mean"] == pytest.approx(ref[name])
        assert measure["generated"]["mean"] == pytest.approx(gen[name])
        assert measure["relative_difference"] == pytest.approx(
            relative_difference(gen[name], ref[name]), nan_ok=True
        )
    assert "<h2>Voice leading</h2>" in result.paths["html"].read_text()


def test_voice_leading_is_reported_only_for_multi_part_music(chorales, folk_tunes):
    tunes = analyze_scores(list(folk_tunes.values()), musegan=False)
    assert not tunes.voice_leading and "voice_leading" not in compare_analyses(tunes, tunes)[0]
    report, _ = compare_analyses(tunes, analyze_scores(list(chorales.values())[:2], musegan=False))
    section = report["voice_leading"]
    assert section["pieces"] == {"generated": 0, "reference": 2} and section["per_piece"]["generated"] == {}
    assert np.isnan(section["measures"]["voice_crossing_rate"]["generated"]["mean"])


@pytest.mark.parametrize(
    ("generated", "reference", "expected"),
    [
        (0.3, 0.2, 0.5),
        (0.1, 0.2, -0.5),
        (2.0, -4.0, 1.5),
        (0.0, 0.0, 0.0),
        (0.1, 0.0, np.nan),
        (np.nan, 0.2, np.nan),
    ],
)
def test_relative_difference(generated, reference, expected):
    assert relative_difference(generated, reference) == pytest.approx(expected, nan_ok=True)


def test_cli_errors_are_clear(folders, tmp_path):
    generated, _ = folders
    empty = tmp_path / "empty"
    empty.mkdir()
    runner = CliRunner()
    result = runner.invoke(
        app, ["evaluate", str(empty), "--reference", str(generated), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "no music files" in result.output
    result = runner.invoke(
        app, ["evaluate", str(generated), "--reference", str(tmp_path / "nope"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "not a folder" in result.output
    args = ["evaluate", str(generated), "--reference", str(generated), "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--model", "nope"])
    assert result.exit_code == 2 and "unknown model 'nope'" in result.output


def test_cli_with_a_musegan_model_tables_its_own_voices(chorales, tmp_path):
    """A chorale MuseGAN's four voices get a column each, not one "Strings" column for all (LPD-5's mapping by
    program puts its programs 40-42 there and leaves the other instruments empty)."""
    from museforge.families.serving import generate_song, get_model

    generated, reference = tmp_path / "gen", tmp_path / "ref"
    for i, song in enumerate(
        generate_song(get_model("musegan"), style="chorale", bars=4, seed=0, num_samples=2)
    ):
        song.save_midi(generated / f"gen{i}.mid")
    reference.mkdir()
    for i, score in enumerate(list(chorales.values())[:3]):
        score.dump_midi(reference / f"ref{i}.mid")
    args = ["evaluate", str(generated), "--reference", str(reference)]
    result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "r"), "--model", "musegan"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    section = report["multitrack"]
    assert report["model"] == "musegan" and section["tracks"] == ["soprano", "alto", "tenor", "bass"]
    assert all(section["generated"]["EB"][voice] < 100.0 for voice in section["tracks"])  # every voice plays
    assert "controls" not in report and "takes no attribute controls" in result.output
    merged = average_metrics(analyze_files(sorted(generated.glob("*.mid"))).musegan)["EB"]  # LPD-5's layout
    assert merged["Piano"] == 100.0 and merged["Strings"] < 100.0  # what the model's own layout avoids


def test_cli_with_a_controlled_model_reports_control_fidelity(folders, tmp_path):
    generated, reference = folders
    out = tmp_path / "r"
    args = ["evaluate", str(generated), "--reference", str(reference), "--out", str(out)]
    result = CliRunner().invoke(
        app, [*args, "--model", "musemorphose", "--control-pieces", "1", "--seed", "4"]
    )
    assert result.exit_code == 0, result.output
    controls = json.loads((out / "report.json").read_text())["controls"]
    assert controls["family"] == "musemorphose" and controls["pieces"] == 1 and controls["seed"] == 4
    assert set(controls["rho"]) == {"rhythm", "polyphony"} and len(controls["requested"]["rhythm"][0]) == 8
    for a in ("rhythm", "polyphony"):
        asked, got = controls["requested"][a][0], controls["measured"][a][0]
        assert controls["rho"][a] == pytest.approx(spearman(asked, got), nan_ok=True)
    html = (out / "report.html").read_text()
    assert "Control fidelity" in html and "(model musemorphose)" in html
    assert "control fidelity (Spearman" in result.output
