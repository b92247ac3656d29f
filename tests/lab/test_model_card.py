"""Shipping a run: a tiny Transformer trained here on real chorales and folk tunes, shipped through the CLI."""

import json
import shlex

import pytest
import torch
import typer
from typer.testing import CliRunner

from museforge.cli import app
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.manifest import load_manifest
from museforge.families.likelihood import heldout_likelihood
from museforge.families.serving import clear_model_cache, generate_song, get_model
from museforge.families.training import resume_run, start_run
from museforge.lab.model_card import _epochs, _stop_line, train_command, training_summary
from museforge.metrics.originality import OriginalityIndex
from museforge.models.zoo import MODELS_DIR_ENV, list_models

pytestmark = pytest.mark.xdist_group("model_card")
runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data = tmp_path_factory.mktemp("ds")
    build_dataset(
        music21_units(["bach", "essenFolksong"]),
        data,
        BuildOptions(limit=8, workers=2, progress=False, valid=0.25, test=0.25),
    )
    out = tmp_path_factory.mktemp("runs") / "tiny"
    start_run("transformer", data, "tiny", out, train_overrides={"max_steps": 15, "progress": False})
    yield data, out
    torch.set_num_threads(threads)


def test_training_summary_and_command_come_from_the_run(run):
    _, out = run
    summary = training_summary(out)
    assert summary["steps"] == 15 and summary["best_eval_step"] is not None
    assert summary["eval_curve"][-1][0] == 15
    command = train_command(json.loads((out / "run.json").read_text()))
    assert command.startswith(
        "museforge train --model remi_transformer --preset tiny --data "
    )  # the family's name
    assert "--max-steps 15" in command and "--progress" not in command  # only options `train` takes
    shell = typer.main.get_command(app)
    context = shell.make_context("museforge", ["train"])
    _, train, rest = shell.resolve_command(context, shlex.split(command)[1:])
    parsed = train.make_context("train", rest).params  # the recorded command parses as `train` reads it
    assert (parsed["model"], parsed["preset"], parsed["max_steps"]) == ("remi_transformer", "tiny", 15)
    assert summary["stages"] == [] and "init_without_log" not in summary


def test_a_resumed_runs_training_time_adds_up_its_sessions(run, tmp_path):
    """``--resume`` restarts the log's clock: the card's time is the sessions' times added, not the last's."""
    data, _ = run
    out = tmp_path / "resumed"
    start_run("transformer", data, "tiny", out, train_overrides={"max_steps": 10, "progress": False})
    first = training_summary(out)["wall_seconds"]
    resume_run(out, max_steps=15)
    rows = (out / "log.csv").read_text().splitlines()[1:]
    elapsed = [float(row.split(",")[-1]) for row in rows]
    restart = next(i for i in range(1, len(elapsed)) if elapsed[i] < elapsed[i - 1])
    assert elapsed[restart - 1] == first  # the first session's rows are kept up to its checkpoint
    summary = training_summary(out)
    assert summary["steps"] == 15
    assert summary["wall_seconds"] == pytest.approx(first + elapsed[-1])
    assert summary["wall_seconds"] > elapsed[-1]


def test_a_run_killed_inside_an_epoch_counts_only_the_epochs_it_evaluated(run, tmp_path):
    """A run stopped mid-epoch (killed) logged train rows of an epoch it never finished: the card says so."""
    import shutil

    _, out = run
    copy = tmp_path / "killed"
    shutil.copytree(out, copy)
    summary = training_summary(copy)
    assert not summary["cut_off"] and _epochs(summary) == f"{summary['epochs']} epoch" + (
        "" if summary["epochs"] == 1 else "s"
    )
    rows = (copy / "log.csv").read_text().splitlines()
    last = rows[-1].split(",")
    assert last[2] == "eval"
    epoch, step = int(last[1]), int(last[0])
    extra = [f"{step + i},{epoch + 1},train,3.0,,0.001,1.0,100.0,{100 + i}" for i in (1, 2)]
    (copy / "log.csv").write_text("\n".join([*rows, *extra]) + "\n")
    cut = training_summary(copy)
    assert cut["cut_off"] and cut["epochs"] == summary["epochs"] and cut["steps"] == step + 2
    assert _epochs(cut).endswith(f" and part of epoch {summary['epochs'] + 1}")


def test_a_run_started_from_weights_without_a_log_says_so(run, tmp_path):
    """Fine-tuning a shipped model (``--init models/NAME``) has no earlier log to summarise: the summary names
    where the weights came from instead of passing the run off as trained from scratch."""
    import shutil

    _, out = run
    copy = tmp_path / "tuned"
    shutil.copytree(out, copy)
    request = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**request, "init_from": str(tmp_path / "shipped")}))
    summary = training_summary(copy)
    assert summary["init_without_log"] == str(tmp_path / "shipped") and summary["stages"] == []
    assert "init_fresh" not in summary


def test_a_run_that_decayed_its_learning_rate_to_the_floor_says_it_ran_its_schedule(run, tmp_path):
    """A cosine run that reached its floor ended by design, not by a cut-off budget; a run still warming up
    (the fixture's 15 of 20 warm-up steps) did not, and keeps the budget line."""
    data, out = run
    done = tmp_path / "annealed"
    start_run("transformer", data, "tiny", done, train_overrides={"max_steps": 30, "progress": False})
    summary = training_summary(done)
    assert summary["schedule_done"] and summary["lr_end_ratio"] == pytest.approx(0.1, abs=1e-3)
    assert not summary["plateaued"]  # a 30-step run on 8 pieces still improves at its last evaluation
    assert _stop_line(summary).startswith("ran its whole learning-rate schedule, down to 10% of the peak")
    short = training_summary(out)
    assert not short["schedule_done"] and short["lr_end_ratio"] == pytest.approx(1.0)
    assert _stop_line(short).startswith("stopped by its time or step budget")


def test_a_run_stopped_by_min_delta_is_called_a_plateau_though_its_last_loss_was_lowest(run, tmp_path):
    """The card replays the trainer's patience rule (``counts_as_gain``) over the log, so a run that crept down
    by less than ``min_delta`` reads as stopped at its plateau, not cut short."""
    data, _ = run
    out = tmp_path / "creeping"
    overrides = {"epochs": 10, "patience": 2, "min_delta": 10.0, "progress": False}
    result = start_run("transformer", data, "tiny", out, train_overrides=overrides)
    summary = training_summary(out)
    assert result.stopped_early and len(summary["eval_curve"]) == 3
    assert summary["plateaued"] and summary["evals_since_gain"] == 2 and summary["min_delta"] == 10.0
    assert _stop_line(summary).startswith(
        "stopped when the validation loss stopped improving by more than 10.0"
    )


def test_a_chain_of_runs_names_the_weights_its_first_stage_started_from(run, tmp_path):
    """Run B fine-tunes run A's best, and A fine-tuned a shipped model: B's card lists A as a stage and still
    says where A's weights came from."""
    import shutil

    _, out = run
    first, second = tmp_path / "a", tmp_path / "b"
    for copy, init in ((first, tmp_path / "shipped"), (second, first / "best")):
        shutil.copytree(out, copy)
        request = json.loads((copy / "run.json").read_text())
        (copy / "run.json").write_text(json.dumps({**request, "init_from": str(init)}))
    summary = training_summary(second)
    assert len(summary["stages"]) == 1 and summary["stages"][0]["steps"] == 15
    assert summary["init_without_log"] == str(tmp_path / "shipped")


def test_a_run_that_added_weights_to_its_source_says_which_and_how_it_was_started(run, tmp_path):
    """A fine-tune whose model overrides add weights (e.g. MuseGAN's critic streams) records them as
    ``init_fresh``; the card's command line repeats the overrides, so the run can be started again."""
    import shutil

    _, out = run
    copy = tmp_path / "tuned"
    shutil.copytree(out, copy)
    request = json.loads((copy / "run.json").read_text())
    added = {
        "init_from": "models/x",
        "model_overrides": {"feature_streams": True},
        "init_fresh": ["a.w", "a.b"],
    }
    (copy / "run.json").write_text(json.dumps({**request, **added}))
    summary = training_summary(copy)
    assert summary["init_fresh"] == {"from": "models/x", "tensors": ["a.w", "a.b"]}
    command = train_command({**request, **added})
    assert command.endswith("""--init models/x --model-config '{"feature_streams": true}'""")


def test_ship_writes_a_measured_card_and_a_usable_model(run, tmp_path, monkeypatch):
    data, out = run
    result = runner.invoke(
        app,
        [
            "models",
            "ship",
            str(out),
            "--name",
            "tiny-remi",
            "--data",
            str(data),
            "--description",
            "A tiny REMI test model.",
            "--hardware",
            "2-core CPU",
            "--models-root",
            str(tmp_path),
            "--samples",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    shipped = tmp_path / "tiny-remi"
    card = (shipped / "MODEL_CARD.md").read_text()
    assert card.splitlines()[0] == "A tiny REMI test model."
    n_test = len(load_manifest(data, "test"))
    likelihood = heldout_likelihood(shipped, data, 300)
    assert f"Test split, {n_test} pieces, {likelihood['n_tokens']} tokens" in card
    assert f"NLL {likelihood['nll']:.3f}" in card
    report = json.loads((shipped / "evaluation" / "report.json").read_text())
    assert report["n_generated"] == 3 and report["n_reference"] == n_test
    assert f"overlap {report['overall']['overlap']:.3f}" in card
    assert "museforge train --model remi_transformer" in card and "Family `remi_transformer`" in card
    index = OriginalityIndex.load(shipped / "originality.npz")
    assert index.n_pieces == len(load_manifest(data, "train"))

    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    clear_model_cache()
    (info,) = list_models()
    assert info.name == "tiny-remi" and info.description == "A tiny REMI test model."
    song = generate_song("tiny-remi", style="folk", bars=2, seed=3)[0]
    assert song.originality is not None  # the shipped index is picked up
    assert song.score.note_num() > 0


def test_resample_rewrites_only_the_samples_part_of_a_card(run, tmp_path):
    data, out = run
    ship = ["models", "ship", str(out), "--name", "tiny-remi", "--data", str(data), "--description", "Tiny.",
            "--hardware", "2-core CPU", "--models-root", str(tmp_path), "--samples", "2"]  # fmt: skip
    assert runner.invoke(app, ship).exit_code == 0
    shipped = tmp_path / "tiny-remi"
    before = (shipped / "MODEL_CARD.md").read_text()
    result = runner.invoke(app, ["models", "resample", str(shipped), "--data", str(data), "--samples", "3"])
    assert result.exit_code == 0, result.output
    after = (shipped / "MODEL_CARD.md").read_text()
    head = "## Samples against held-out music"
    assert after.split(head)[0] == before.split(head)[0]  # data, training, likelihood: as shipped
    assert after.split("## Config")[1] == before.split("## Config")[1]
    report = json.loads((shipped / "evaluation" / "report.json").read_text())
    assert report["n_generated"] == 3
    samples = after.split(head)[1].split("## Config")[0]
    assert "Re-measured" in samples and "3 samples (16 bars each" in samples
    assert f"overlap {report['overall']['overlap']:.3f}" in samples
    # drawn as the app draws them: in the precision this machine's probe chose (recorded under the var dir)
    chosen = get_model(shipped, precision="auto").precision
    assert ("fp16 weights" in samples.split("## Sampling speed")[1]) == chosen.startswith("fp16")
    (shipped / "MODEL_CARD.md").write_text("A card without sections.\n")
    result = runner.invoke(app, ["models", "resample", str(shipped), "--data", str(data), "--samples", "1"])
    assert result.exit_code == 2 and "no '## Samples against held-out music' section" in result.output


def test_score_samples_the_split_evenly_and_breaks_it_down_by_style(run, tmp_path):
    """`museforge score`: a seeded sample past --max-pieces, per-style NLLs that add up to the overall one."""
    data, out = run
    checkpoint = out / "best"
    full = heldout_likelihood(checkpoint, data, 1000)
    n_test = len(load_manifest(data, "test"))
    assert full["n_sequences"] == full["split_pieces"] == n_test
    assert set(full["by_style"]) == {r.style for r in load_manifest(data, "test")}
    assert sum(r["n_tokens"] for r in full["by_style"].values()) == full["n_tokens"]
    weighted = sum(r["nll"] * r["n_tokens"] for r in full["by_style"].values()) / full["n_tokens"]
    assert full["nll"] == pytest.approx(weighted) and full["context"] == 128
    sample = heldout_likelihood(checkpoint, data, 2, seed=1)
    assert sample["n_sequences"] == 2 and sample["split_pieces"] == n_test
    assert heldout_likelihood(checkpoint, data, 2, seed=1) == sample  # the seed fixes the sample
    capped = heldout_likelihood(
        checkpoint, data, 1000, max_tokens=16
    )  # each piece's first 16 tokens: 15 scored
    assert capped["n_tokens"] == 15 * n_test < full["n_tokens"]

    written = tmp_path / "score.json"
    result = runner.invoke(
        app,
        ["score", "--model", str(checkpoint), "--data", str(data), "--device", "cpu", "--out", str(written)],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(written.read_text())["nll"] == pytest.approx(full["nll"])
    assert f"{full['nll']:.4f}" in result.output
    bad = runner.invoke(app, ["score", "--model", str(checkpoint), "--data", str(data), "--split", "dev"])
    assert bad.exit_code == 2 and "--split must be train, valid or test" in bad.output
