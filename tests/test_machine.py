"""The thread count every command runs with: --threads, else MUSEFORGE_THREADS, else the idle CPUs this process
may use; and the import graph that keeps `museforge --help` and `models list` free of torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from museforge.cli import app
from museforge.machine import THREADS_ENV, choose_threads, cpu_model, idle_threads

SRC = Path(__file__).resolve().parents[1] / "src"
MODEL_COMMANDS = (
    ["generate"], ["transfer"], ["interpolate"], ["evaluate-transfer"], ["score"], ["train"],
    ["models", "resample"], ["models", "ship"], ["serve"],
)  # fmt: skip


def run_python(code: str, **env: str) -> str:
    """Run code in a fresh interpreter (imports and CPU affinity stay out of this test process)."""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
        env={**os.environ, "PYTHONPATH": str(SRC), **env},
    )  # fmt: skip
    return done.stdout


def test_threads_follow_idle_cpus():
    assert idle_threads(cpus=2, load=3.5, machine_cpus=2) == 1  # a busy 2-core machine: one thread
    assert idle_threads(cpus=2, load=0.1, machine_cpus=2) == 2
    assert idle_threads(cpus=8, load=3.0, machine_cpus=8) == 5
    assert idle_threads(cpus=2, load=6.0, machine_cpus=64) == 2  # our 2 of 64 CPUs, the load runs elsewhere
    assert idle_threads(cpus=4, load=64.0, machine_cpus=16) == 1


def test_explicit_threads_win_and_bad_ones_are_named(monkeypatch):
    monkeypatch.setenv(THREADS_ENV, "3")
    assert choose_threads(2).threads == 2 and choose_threads(2).reason == "--threads"
    assert choose_threads().threads == 3 and choose_threads().reason == THREADS_ENV
    monkeypatch.setenv(THREADS_ENV, "many")
    with pytest.raises(
        ValueError, match="MUSEFORGE_THREADS must be a whole number of threads >= 1, got 'many'"
    ):
        choose_threads()


def test_threads_stay_within_the_cpus_the_process_may_use():
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "from museforge.machine import choose_threads; print(choose_threads().threads)"
    )
    assert run_python(code, **{THREADS_ENV: ""}).strip() == "1"


@pytest.mark.parametrize("command", MODEL_COMMANDS, ids=" ".join)
def test_every_command_that_runs_a_model_takes_threads(command):
    result = CliRunner().invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "--threads" in result.output


def test_generate_says_which_threads_and_precision_it_ran(tmp_path):
    out = tmp_path / "song.mid"
    result = CliRunner().invoke(
        app, ["generate", "--out", str(out), "--bars", "2", "--seed", "0", "--threads", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "1 thread (--threads)" in result.output and "precision fp" in result.output and out.is_file()
    bad = CliRunner().invoke(app, ["generate", "--out", str(out), "--threads", "0"])
    assert bad.exit_code == 2 and "--threads" in bad.output


def test_the_command_line_imports_no_model_library_until_a_model_runs():
    heavy = (
        "torch",
        "scipy",
        "miditok",
        "huggingface_hub",
        "rich.markdown",
        "pydantic",
        "museforge.families",
    )
    code = (
        "import sys, json\n"
        "from museforge.cli import app\n"
        "from museforge.models.zoo import list_models\n"
        "names = [m.name for m in list_models()]\n"
        f"print(json.dumps([names, [m for m in {heavy!r} if m in sys.modules]]))"
    )
    names, loaded = json.loads(run_python(code))
    assert "remi-transformer" in names and loaded == []


def test_generation_imports_neither_scipy_nor_the_training_loop():
    code = (
        "import sys; import museforge.families.loaded; from museforge.training.distributed import select_device; "
        "print([m for m in ('scipy', 'museforge.training.trainer', 'rich.progress') if m in sys.modules])"
    )
    assert run_python(code).strip() == "[]"


def test_cpu_model_is_named():
    assert cpu_model() and cpu_model() != "unknown CPU"
