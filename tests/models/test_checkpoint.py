"""The one checkpoint format: round trips, tied weights, atomic replacement and clear errors."""

import json

import pytest
import torch
from safetensors import safe_open

from museforge.families import load_checkpoint
from museforge.families.performance.model import PerformanceRNN, PerformanceRNNConfig
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.models.checkpoint import CheckpointError, save_checkpoint

TOKENIZER = {"name": "remi", "config": {"beat_res": {"0_4": 8}}, "vocab": ["Bar_None", "Pitch_60"]}


def models():
    torch.manual_seed(0)
    yield TransformerLM(TransformerConfig.preset("tiny", vocab_size=61))
    yield PerformanceRNN(PerformanceRNNConfig(embed_dim=8, hidden_size=16, n_layers=2))


@pytest.mark.parametrize("model", list(models()), ids=["transformer", "performance_rnn"])
def test_round_trip_gives_identical_outputs(tmp_path, model):
    model.eval()
    ids = torch.randint(0, 61, (2, 9))
    expected, _ = model(ids)
    save_checkpoint(tmp_path / "ck", model, tokenizer=TOKENIZER, step=123, metrics={"eval_loss": 1.5})
    ck = load_checkpoint(tmp_path / "ck")
    assert not ck.model.training
    assert ck.config == model.config and ck.step == 123 and ck.metrics == {"eval_loss": 1.5}
    assert ck.tokenizer == TOKENIZER
    assert ck.model_name in ("transformer", "performance_rnn") and ck.museforge_version
    torch.testing.assert_close(ck.model(ids)[0], expected, rtol=0, atol=0)


def test_tied_matrix_is_stored_once_and_stays_tied(tmp_path):
    model = next(models())
    save_checkpoint(tmp_path / "ck", model, tokenizer={}, step=0, metrics={})
    with safe_open(tmp_path / "ck" / "model.safetensors", "pt") as fh:
        keys = set(fh.keys())
    assert ("tok_emb.weight" in keys) != ("lm_head.weight" in keys)
    loaded = load_checkpoint(tmp_path / "ck").model
    assert loaded.lm_head.weight is loaded.tok_emb.weight


def test_saving_over_a_checkpoint_replaces_it_and_leaves_no_temp_dirs(tmp_path):
    model = next(models())
    save_checkpoint(tmp_path / "ck", model, tokenizer={}, step=1, metrics={})
    save_checkpoint(
        tmp_path / "ck", model, tokenizer={}, step=2, metrics={}, training_state={"x": torch.ones(2)}
    )
    assert load_checkpoint(tmp_path / "ck").step == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "training_state.pt",
    ]


def test_missing_and_corrupt_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint directory"):
        load_checkpoint(tmp_path / "nowhere")
    model = next(models())
    ck = save_checkpoint(tmp_path / "ck", model, tokenizer={}, step=0, metrics={})
    (ck / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(ck)
    (ck / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"config\.json"):
        load_checkpoint(ck)
    fresh = save_checkpoint(tmp_path / "fresh", model, tokenizer={}, step=0, metrics={})
    (fresh / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json"):
        load_checkpoint(fresh)


def test_weights_that_do_not_match_the_config_are_refused(tmp_path):
    model = next(models())
    ck = save_checkpoint(tmp_path / "ck", model, tokenizer={}, step=0, metrics={})
    meta = json.loads((ck / "config.json").read_text())
    meta["config"]["d_ff"] = 128
    (ck / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match the config"):
        load_checkpoint(ck)


def test_tokenizer_must_be_a_dict(tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        save_checkpoint(tmp_path / "ck", next(models()), tokenizer="remi", step=0, metrics={})


def test_weights_packed_into_one_buffer_are_saved(tmp_path):
    """On CUDA, cuDNN packs an LSTM's weights into one allocation; rebuilt here by hand on the CPU."""
    torch.manual_seed(0)
    rnn = PerformanceRNN(PerformanceRNNConfig(embed_dim=8, hidden_size=16, n_layers=2))
    params = list(rnn.lstm.parameters())
    flat = torch.cat([p.detach().flatten() for p in params])
    offset = 0
    for p in params:
        p.data = flat[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
    x = torch.randint(0, 388, (1, 12))
    expected, _ = rnn.eval()(x)
    save_checkpoint(tmp_path / "ckpt", rnn, tokenizer={"name": "performance"}, step=3, metrics={})
    loaded = load_checkpoint(tmp_path / "ckpt")
    got, _ = loaded.model(x)
    torch.testing.assert_close(got, expected)
