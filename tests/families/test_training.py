"""Each family's training recipe and `museforge train` on a small real dataset: chorales and folk tunes of the
music21 corpus."""

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from museforge.cli import app
from museforge.data.build import BuildOptions, build_dataset
from museforge.data.corpora import music21_units
from museforge.data.dataset import TokenCache, TokenizeOptions, TokenWindowDataset, tokenize_dataset
from museforge.families import get_family, load_checkpoint
from museforge.families.performance.model import controls_for_events
from museforge.families.performance.train import PerformanceControlWindows
from museforge.families.training import prepare_training, resume_run, start_run
from museforge.lab.model_card import train_command
from museforge.tokenizers import TOKENIZERS
from museforge.tokenizers.registry import load_tokenizer_state
from museforge.training.trainer import cpu_has_bf16

pytestmark = pytest.mark.xdist_group("recipes")
runner = CliRunner()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("ds")
    build_dataset(
        music21_units(["bach", "essenFolksong"]),
        out,
        BuildOptions(limit=8, workers=2, progress=False, valid=0.25, test=0.0),
    )
    return out


def test_unknown_family_or_preset_is_refused():
    with pytest.raises(ValueError, match="unknown model family 'gan'"):
        get_family("gan")
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        get_family("transformer").recipe("huge")


def test_train_cli_writes_checkpoints_that_load_and_resume(dataset, tmp_path):
    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "transformer",
        "--data",
        str(dataset),
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--max-steps",
        "12",
        "--checkpoint-every",
        "5",
        "--device",
        "cpu",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "run.json").read_text())["train_overrides"]["checkpoint_every"] == 5
    ckpt = load_checkpoint(out / "best")
    assert ckpt.model_name == "transformer" and ckpt.step == 12
    tokenizer = TOKENIZERS[ckpt.tokenizer["name"]].from_state_dict(ckpt.tokenizer)
    assert tokenizer.vocab_size == ckpt.config.vocab_size
    assert json.loads((out / "run.json").read_text())["preset"] == "tiny"
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "already holds a run" in again.output
    resumed = runner.invoke(app, ["train", "--resume", str(out), "--max-steps", "16"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out / "last").step == 16
    evals = [line.split(",")[0] for line in (out / "log.csv").read_text().splitlines() if ",eval," in line]
    assert {"12", "16"} <= set(evals)  # the final weights of each call were evaluated


def test_train_cli_precision_is_recorded_and_refused_where_it_would_break_training(dataset, tmp_path):
    """``--precision bf16`` goes into run.json (so ``--resume`` and the model card's command keep it); MuseGAN's
    gradient penalty needs fp32, and an unknown precision is named."""
    out = tmp_path / "bf16"
    base = ["train", "--data", str(dataset), "--preset", "tiny", "--max-steps", "4", "--device", "cpu"]
    result = runner.invoke(
        app, [*base, "--model", "performance_rnn", "--out", str(out), "--precision", "bf16"]
    )
    if cpu_has_bf16():
        assert result.exit_code == 0, result.output
        request = json.loads((out / "run.json").read_text())
        assert request["train_overrides"]["precision"] == "bf16"
        assert "--precision bf16" in train_command(request)
    else:
        assert result.exit_code == 2 and "bf16 needs a CPU" in result.output, result.output
    gan = runner.invoke(
        app, [*base, "--model", "musegan", "--out", str(tmp_path / "gan"), "--precision", "bf16"]
    )
    assert gan.exit_code == 2 and "MuseGAN trains in fp32" in gan.output
    odd = runner.invoke(
        app, [*base, "--model", "performance_rnn", "--out", str(tmp_path / "odd"), "--precision", "fp8"]
    )
    assert odd.exit_code == 2 and "precision must be one of" in odd.output


def test_performance_windows_carry_magenta_controls(dataset):
    run = prepare_training(
        "performance_rnn", dataset, "tiny", dataset / "unused-run", device="cpu", max_shift=0
    )
    assert (
        isinstance(run.trainer.train_data, PerformanceControlWindows) and run.trainer.train_data.unset_p > 0
    )
    windows = run.trainer.eval_data  # no control dropout: the controls are exactly Magenta's
    assert isinstance(windows, PerformanceControlWindows) and windows.unset_p == 0
    cache: TokenCache = windows.windows.cache
    tokenizer = cache.tokenizer()
    piece = cache.piece(0)
    full = controls_for_events(tokenizer.event_times(piece), tokenizer.onset_pitches(piece))
    item = windows[0]
    assert item["controls"].shape == (128, 22) and item["input_ids"].shape == (128,)
    n = int((item["labels"] != -100).sum())
    assert n == min(128, len(piece))
    # the window plus 512 tokens of look-ahead covers 5 s here, so its controls equal the whole piece's
    torch.testing.assert_close(item["controls"][:n], full[:n])


def test_training_windows_are_transposed_versions_of_the_cache(dataset):
    run = prepare_training("transformer", dataset, "tiny", dataset / "unused-run2", device="cpu", max_shift=5)
    ds = run.trainer.train_data
    assert isinstance(ds, TokenWindowDataset)
    tok = ds.cache.tokenizer()
    torch.manual_seed(1)
    for i in range(0, len(ds), max(1, len(ds) // 20)):
        raw, got = ds.window(i), ds[i]["input_ids"].numpy()[: len(ds.window(i))]
        shifts = {int(s) for s in (got - raw)[np.isin(raw, tok.pitch_ids)]}
        assert len(shifts) <= 1 and all(abs(s) <= 5 for s in shifts)


def test_a_transformer_context_is_the_window_it_trains_on(dataset):
    """RoPE does not extrapolate past trained positions, so the model may not claim a longer context."""
    run = prepare_training("transformer", dataset, "tiny", dataset / "unused-run3", device="cpu")
    assert run.model_config["max_seq_len"] == get_family("transformer").recipe("tiny").seq_len
    assert run.trainer.train_data.seq_len == run.model_config["max_seq_len"]
    with pytest.raises(ValueError, match="differs from the training window"):
        prepare_training(
            "transformer", dataset, "tiny", dataset / "unused-run4", model_overrides={"max_seq_len": 1024}
        )


def test_a_run_can_start_from_another_runs_weights(dataset, tmp_path):
    first = tmp_path / "first"
    result = runner.invoke(
        app,
        [
            "train",
            "--model",
            "transformer",
            "--data",
            str(dataset),
            "--preset",
            "tiny",
            "--out",
            str(first),
            "--max-steps",
            "3",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    second = tmp_path / "second"
    start_run(
        "transformer",
        dataset,
        "tiny",
        second,
        init_from=first / "best",
        train_overrides={"max_steps": 1, "lr": 1e-12, "warmup_steps": 0, "weight_decay": 0.0},
    )
    source, continued = load_checkpoint(first / "best").model, load_checkpoint(second / "last").model
    for (name, a), (_, b) in zip(source.state_dict().items(), continued.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    assert (
        json.loads((second / "run.json").read_text())["init_step"] == 3
    )  # a VAE's beta cycle goes on from it
    with pytest.raises(ValueError, match="holds a different model"):
        start_run(
            "transformer",
            dataset,
            "tiny",
            tmp_path / "third",
            init_from=first / "best",
            model_overrides={"d_model": 64},
            train_overrides={"max_steps": 1},
        )


def test_a_single_stream_model_moves_to_multi_track_tokens_keeping_the_tokens_it_knows(dataset, tmp_path):
    """Fine-tuning onto REMI with Program tokens (which miditok puts between the old tokens, shifting their ids):
    the embedding/output row of every token both vocabularies name is carried over by name, the new tokens
    start as the mean row, and every other weight is the checkpoint's."""
    single = tmp_path / "single"
    start_run("transformer", dataset, "tiny", single, train_overrides={"max_steps": 1})
    multi_data = tmp_path / "multi-data"
    shutil.copytree(dataset, multi_data, ignore=shutil.ignore_patterns("cache"))
    tokenize_dataset(multi_data, "remi", TokenizeOptions(config={"use_programs": True}, workers=1))
    multi = tmp_path / "multi"
    start_run(
        "transformer", multi_data, "tiny", multi, init_from=single / "last",
        train_overrides={"max_steps": 1, "lr": 1e-12, "warmup_steps": 0, "weight_decay": 0.0},
    )  # fmt: skip
    old, new = load_checkpoint(single / "last"), load_checkpoint(multi / "last")
    old_names = load_tokenizer_state(old.tokenizer).token_names()
    new_names = load_tokenizer_state(new.tokenizer).token_names()
    assert len(new_names) > len(old_names) and new_names[: len(old_names)] != old_names  # ids moved
    shared = [name for name in new_names if name in old_names]
    assert len(shared) == len(old_names)
    rows_old = torch.tensor([old_names.index(n) for n in shared])
    rows_new = torch.tensor([new_names.index(n) for n in shared])
    fresh = torch.tensor([j for j, n in enumerate(new_names) if n not in old_names])
    assert all(new_names[j].startswith("Program_") for j in fresh.tolist())
    before, after = old.model.state_dict(), new.model.state_dict()
    for name, weight in before.items():
        if weight.shape[0] != len(old_names):
            torch.testing.assert_close(after[name], weight, msg=name)
            continue
        torch.testing.assert_close(after[name][rows_new], weight[rows_old], msg=name)
        torch.testing.assert_close(after[name][fresh], weight.mean(0).expand(len(fresh), *weight.shape[1:]))


def test_a_run_from_a_checkpoint_keeps_its_size_and_options_without_repeating_them(dataset, tmp_path):
    """The checkpoint's config replaces the preset's model (the preset still gives the training recipe);
    overrides given still change it, and a resumed run rebuilds the same model without the checkpoint."""
    narrow = tmp_path / "narrow"
    one_layer = {"n_layers": 1, "norm": "layer"}
    start_run(
        "transformer", dataset, "tiny", narrow, model_overrides=one_layer, train_overrides={"max_steps": 1}
    )
    kept = tmp_path / "kept"
    start_run(
        "transformer", dataset, "tiny", kept, init_from=narrow / "last", train_overrides={"max_steps": 1}
    )
    config = load_checkpoint(kept / "last").config
    assert (config.n_layers, config.norm) == (1, "layer")  # the preset's tiny has 2 and RMSNorm
    request = json.loads((kept / "run.json").read_text())
    assert request["model_overrides"] == {} and request["init_config"]["n_layers"] == 1
    assert "vocab_size" not in request["init_config"]  # the data's tokenizer decides it
    resume_run(kept, max_steps=2)
    assert load_checkpoint(kept / "last").config.n_layers == 1
    changed = tmp_path / "changed"
    start_run(
        "transformer", dataset, "tiny", changed, init_from=narrow / "last",
        model_overrides={"dropout": 0.0}, train_overrides={"max_steps": 1},
    )  # fmt: skip
    config = load_checkpoint(changed / "last").config
    assert (config.n_layers, config.dropout) == (1, 0.0)


@pytest.mark.parametrize("spelling", ["Performance-RNN", "performance_rnn", "performance-rnn"])
def test_train_takes_every_spelling_of_a_family_and_resumes_runs_that_stored_another(
    dataset, tmp_path, spelling
):
    """`museforge train --model` reads the registry's spellings, as `generate` does; run.json records the
    family's name, and a run.json from before (its checkpoint model's name) still resumes."""
    out = tmp_path / "run"
    args = ["train", "--model", spelling, "--data", str(dataset), "--preset", "tiny", "--out", str(out)]
    result = runner.invoke(app, [*args, "--max-steps", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    request = json.loads((out / "run.json").read_text())
    assert (
        request["model"] == "performance_rnn"
        and load_checkpoint(out / "last").model_name == "performance_rnn"
    )
    (out / "run.json").write_text(json.dumps({**request, "model": "performance_rnn"}))
    resumed = runner.invoke(app, ["train", "--resume", str(out), "--max-steps", "2", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(out / "last").step == 2


def test_train_refuses_an_unknown_family_naming_the_known_ones(dataset, tmp_path):
    out = tmp_path / "never"
    result = runner.invoke(app, ["train", "--model", "gan", "--data", str(dataset), "--out", str(out)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "unknown model family 'gan'" in said
    assert "families: remi_transformer, performance_rnn, musemorphose, musegan" in said, said
    assert not out.exists()  # refused before the run folder is made
