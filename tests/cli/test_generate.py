"""`museforge generate` and `museforge models list` end to end, on a tiny model trained here on chorales and
installed as the default model of a models folder made for the test."""

import json
import re
from pathlib import Path

import music21
import numpy as np
import pytest
import soundfile
import symusic
import torch
from typer.testing import CliRunner

from museforge.cli import app
from museforge.data.formats import load_score
from museforge.families import DEFAULT_MODEL
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.families.serving import clear_model_cache
from museforge.models.checkpoint import save_checkpoint
from museforge.models.zoo import MODELS_DIR_ENV
from museforge.tokenizers import build_tokenizer
from museforge.training import TrainConfig, Trainer

runner = CliRunner()
REMI = build_tokenizer("remi")


@pytest.fixture(scope="module")
def models_folder(tmp_path_factory) -> Path:
    """A models folder whose default model is a tiny Transformer trained a few seconds on two chorales."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("models")
    seqs = [
        REMI.encode(load_score(music21.corpus.getWork(n)), style="chorale").ids for n in ("bach/bwv66.6",)
    ]
    tokens = torch.as_tensor(np.concatenate([np.append(s, REMI.eos_id) for s in seqs]).astype(np.int64))
    windows = [tokens[i : i + 64] for i in range(0, len(tokens) - 64, 8)]
    torch.manual_seed(0)
    model = TransformerLM(TransformerConfig.preset("tiny", vocab_size=REMI.vocab_size, dropout=0.0))
    cfg = TrainConfig(
        out_dir=str(root / "run"), batch_size=8, epochs=4, lr=5e-3, warmup_steps=5, progress=False
    )
    Trainer(model, windows, cfg).fit()
    ckpt = save_checkpoint(
        root / DEFAULT_MODEL, model, tokenizer=REMI.state_dict(), step=42, metrics={"eval_loss": 1.234}
    )
    (ckpt / "MODEL_CARD.md").write_text(
        "# Tiny chorale Transformer for tests\n\nMore text.\n", encoding="utf-8"
    )
    torch.set_num_threads(threads)
    return root


@pytest.fixture
def env(models_folder, monkeypatch) -> Path:
    monkeypatch.setenv(MODELS_DIR_ENV, str(models_folder))
    clear_model_cache()
    return models_folder


def test_generate_writes_midi_and_audio_with_the_default_model(env, tmp_path):
    out, wav = tmp_path / "song.mid", tmp_path / "song.wav"
    args = ["generate", "--style", "chorale", "--bars", "2", "--seed", "1", "--threads", "1"]
    result = runner.invoke(app, [*args, "--out", str(out), "--audio", str(wav), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.output and f"wrote {wav}" in result.output
    chosen = re.search(
        rf"model {DEFAULT_MODEL} \((fp16|fp32), 1 thread \(--threads\)\), seed 1", result.output
    )
    assert chosen and f"precision {chosen.group(1)} by " in result.output  # the probe's choice, and why
    score = symusic.Score.from_file(str(out))
    assert sum(len(t.notes) for t in score.tracks) > 0
    audio, rate = soundfile.read(str(wav))
    assert rate == 44100 and len(audio) > rate and np.abs(audio).max() > 0.01


def test_generate_several_samples_and_attribute_plan(env, tmp_path):
    out = tmp_path / "many" / "song.mid"
    result = runner.invoke(
        app,
        [
            *["generate", "--model", str(env / DEFAULT_MODEL), "--style", "chorale", "--bars", "2"],
            *["--seed", "4", "--num-samples", "2", "--rhythm", "5,-", "--polyphony", "2", "--threads", "1"],
            *["--out", str(out)],
        ],
    )
    assert result.exit_code == 0, result.output
    for i in (1, 2):
        written = out.with_name(f"song-{i}.mid")
        assert f"wrote {written}" in result.output
        assert symusic.Score.from_file(str(written)).note_num() > 0
    assert not out.exists()


def test_models_list_shows_the_folder(env):
    result = runner.invoke(app, ["models", "list", "--json"])
    assert result.exit_code == 0, result.output
    (info,) = json.loads(result.output)
    assert info["name"] == DEFAULT_MODEL and info["family"] == "transformer" and info["step"] == 42
    assert info["valid_nll"] == pytest.approx(1.234) and "chorale" in info["styles"]
    assert info["description"] == "Tiny chorale Transformer for tests"
    assert info["parameters"] == sum(p.numel() for p in TransformerLM(
        TransformerConfig.preset("tiny", vocab_size=REMI.vocab_size)
    ).parameters())  # fmt: skip
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 0 and DEFAULT_MODEL in result.output and "transformer" in result.output


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--style", "jazz"], "unknown style 'jazz'"),
        (["--model", "no-such-model"], "unknown model 'no-such-model'; shipped models: remi-transformer"),
        (["--bars", "0"], "bars: Input should be greater than or equal to 1"),
        (["--bars", "-3"], "bars: Input should be greater than or equal to 1"),
        (["--top-p", "0"], "top_p: Input should be greater than 0"),
        (["--top-p", "1.5"], "top_p: Input should be less than or equal to 1"),
        (["--rhythm", "2,x"], "rhythm.1: Input should be a valid integer"),
        (["--seconds", "5"], "a REMI Transformer model does not take seconds"),
        (["--pitch-classes", "H"], "does not take pitch_classes"),
        (["--precision", "int8"], "precision must be one of ('fp32', 'fp16', 'auto'), got 'int8'"),
        (["--accompany", "a.mid", "--tracks", "soprano:0"], "a REMI Transformer model does not take tracks"),
        (["--morph", "3"], "a REMI Transformer model does not take walk"),
    ],
)
def test_bad_parameters_exit_2_with_a_clear_message(env, tmp_path, extra, message):
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "x.mid"), "--threads", "1", *extra])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "x.mid").exists()


def test_models_list_without_a_models_folder_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "absent"))
    result = runner.invoke(app, ["models", "list"])
    assert result.exit_code == 2 and "is not a directory" in result.output
