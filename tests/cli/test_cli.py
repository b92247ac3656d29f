"""The command line end to end, through typer's runner (same code path as the `museforge` script)."""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FIXTURES
from museforge.cli import app
from museforge.data.manifest import load_manifest
from museforge.io import read_jsonl

runner = CliRunner()


def test_the_cli_builds_its_options_without_importing_torch():
    """`museforge --help` and option errors answer at once: the options' shared defaults and bounds come from
    `museforge.defaults`, and every command imports the heavy library parts only when it runs."""
    probe = "import sys, museforge.cli; print(sorted(m for m in ('torch', 'fastapi') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _script_entry() -> list[str]:
    """The module and function of the `museforge` script (pyproject.toml's entry point)."""
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    return tomllib.loads(pyproject.read_text())["project"]["scripts"]["museforge"].split(":")


def _run_script(args: list[str], **env: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the `museforge` script's entry point (pyproject.toml's) with ARGS in a fresh interpreter: what it
    printed, and which of typer, pydantic and torch it imported."""
    module, function = _script_entry()
    probe = (
        "import json, sys\n"
        f"sys.argv = ['museforge', *{args!r}]\n"
        f"from {module} import {function}\n"
        "try:\n"
        f"    {function}()\n"
        "finally:\n"
        "    print(json.dumps([m for m in ('typer', 'pydantic', 'torch') if m in sys.modules]), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env={**os.environ, **env}
    )
    return done, json.loads(done.stderr.strip().splitlines()[-1])


@pytest.mark.parametrize("args", [["models", "list"], ["models", "list", "--json"]])
def test_the_script_lists_models_without_typer_pydantic_or_torch(args):
    """`museforge models list` is answered before typer (which imports pydantic for every command it parses)
    is loaded, and prints what the typer command prints."""
    done, loaded = _run_script(args)
    assert done.returncode == 0, done.stderr
    assert loaded == []
    assert "remi-transformer" in done.stdout
    typer_path = f"import sys; sys.argv = ['museforge', *{args!r}]; from museforge.cli import app; app()"
    assert (
        subprocess.run([sys.executable, "-c", typer_path], capture_output=True, text=True).stdout
        == done.stdout
    )


def test_the_script_reports_a_missing_models_folder_like_every_error(tmp_path):
    done, _ = _run_script(["models", "list"], MUSEFORGE_MODELS_DIR=str(tmp_path / "absent"))
    assert done.returncode == 2 and "is not a directory" in done.stdout


def test_the_script_stops_quietly_when_its_reader_leaves():
    """`museforge models list --json | head`: exit 1 without a traceback, as typer's commands do."""
    module, function = _script_entry()
    code = f"import sys; sys.argv = ['museforge', 'models', 'list', '--json']; import {module}; {module}.{function}()"
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        proc.stdout.close()  # the reader leaves before the listing is written
        errors = proc.stderr.read()
    assert proc.returncode == 1 and "Traceback" not in errors, errors


def test_data_build_from_music21_and_folder(tmp_path):
    out = tmp_path / "ds"
    result = runner.invoke(
        app,
        [
            "data",
            "build",
            "--source",
            "music21",
            "--collections",
            "bach,miscFolk",
            "--limit",
            "2",
            "--workers",
            "1",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "4 pieces" in result.output
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(FIXTURES / "single_track.mid", src)
    shutil.copy(FIXTURES / "corrupt.mid", src)
    result = runner.invoke(app, ["data", "build", "--source", str(src), "--style", "folk", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "1 rejected" in result.output and "rejects.jsonl" in result.output
    records = load_manifest(out)
    assert len(records) == 5 and sum(r.style == "folk" for r in records) == 3
    assert [row["reason"][:12] for row in read_jsonl(out / "rejects.jsonl")] == ["corrupt MIDI"]


def test_data_build_errors_are_clear(tmp_path):
    result = runner.invoke(
        app, ["data", "build", "--source", "music21", "--collections", "nosuch", "--out", str(tmp_path / "x")]
    )
    assert result.exit_code == 2 and "unknown music21 collection(s): nosuch" in result.output
    result = runner.invoke(app, ["data", "build", "--source", "lpd5", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "needs the LPD-5 folder" in result.output
    result = runner.invoke(
        app, ["data", "build", "--source", str(tmp_path / "missing"), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "does not exist" in result.output
    result = runner.invoke(app, ["data", "stats", str(tmp_path / "none")])
    assert result.exit_code == 2 and "no manifest.jsonl" in result.output


def test_worker_needs_the_queue_url_and_known_queues(monkeypatch, tmp_path):
    monkeypatch.delenv("MUSEFORGE_QUEUE_URL", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env of the checkout
    out = runner.invoke(app, ["worker", "--var", str(tmp_path / "var"), "--device", "cpu"])
    assert out.exit_code == 2 and "MUSEFORGE_QUEUE_URL is not set" in out.output
    out = runner.invoke(app, ["worker", "--device", "tpu"])
    assert out.exit_code == 2 and "use auto, cpu or cuda" in out.output
    monkeypatch.setenv("MUSEFORGE_QUEUE_URL", "http://localhost")
    out = runner.invoke(app, ["worker", "--device", "cpu"])
    assert out.exit_code == 2 and "give a Redis URL" in out.output
    monkeypatch.setenv("MUSEFORGE_QUEUE_URL", "redis://127.0.0.1:1/0")
    out = runner.invoke(app, ["worker", "--device", "cpu", "--queues", "generate,songs"])
    assert out.exit_code == 2 and "unknown queue(s) songs; queues: generate, lab" in out.output
