"""The registry of model versions: a shipped model is version 1; candidates, promotion, rollback, what serves."""

import threading

import pytest
import torch

from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.families.serving import clear_model_cache, generate_song, get_model
from museforge.models.checkpoint import save_checkpoint
from museforge.models.versions import Registry
from museforge.models.zoo import MODELS_DIR_ENV, locate_model, registry
from museforge.tokenizers import build_tokenizer

REMI = build_tokenizer("remi")


def _checkpoint(folder, seed):
    torch.manual_seed(seed)
    model = TransformerLM(TransformerConfig.preset("tiny", vocab_size=REMI.vocab_size))
    return save_checkpoint(folder, model, tokenizer=REMI.state_dict(), step=seed, metrics={})


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    models = tmp_path / "models"
    _checkpoint(models / "tiny-remi", 0)
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))
    monkeypatch.setenv("MUSEFORGE_VAR_DIR", str(tmp_path / "var"))
    clear_model_cache()
    yield models
    clear_model_cache()


def test_a_shipped_model_is_version_one_until_the_lab_adds_one(shipped, tmp_path):
    versions = registry().versions("tiny-remi")
    assert [(v.number, v.status, v.folder) for v in versions] == [(1, "production", "shipped")]
    assert registry().serving("tiny-remi") is None and locate_model("tiny_remi") == (
        shipped / "tiny-remi",
        "tiny-remi",
        1,
    )
    with pytest.raises(ValueError, match="no shipped model 'nothing'"):
        registry().versions("nothing")


def test_promotion_reaches_the_next_load_and_rollback_restores_the_previous(shipped, tmp_path):
    reg = registry()
    candidate = reg.add("tiny-remi", _checkpoint(tmp_path / "run" / "best", 7), parent=1, note="test")
    assert (candidate.number, candidate.status, candidate.parent) == (2, "candidate", 1)
    assert (tmp_path / "var" / "resource" / "registry" / "tiny-remi" / "v2" / "model.safetensors").is_file()
    assert locate_model("tiny-remi")[2] == 1  # a candidate does not serve

    first = get_model("tiny-remi")
    reg.promote("tiny-remi", 2)
    second = get_model("tiny-remi")
    assert (first.version, second.version) == (1, 2) and second.checkpoint.step == 7
    song = generate_song(second, style="chorale", bars=1, seed=0)[0]
    assert song.params["version"] == 2  # each song records the version that made it
    assert [v.status for v in reg.versions("tiny-remi")] == ["archived", "production"]

    back = reg.rollback("tiny-remi")
    assert back.number == 1 and get_model("tiny-remi").version == 1
    assert [(v.status, v.note) for v in reg.versions("tiny-remi")][1] == ("archived", "rolled back")
    with pytest.raises(ValueError, match="no earlier production version"):
        reg.rollback("tiny-remi")
    with pytest.raises(ValueError, match="use promote"):
        reg.update("tiny-remi", 2, status="production")


def test_concurrent_additions_get_distinct_numbers_and_all_are_kept(shipped, tmp_path):
    source = _checkpoint(tmp_path / "run" / "best", 3)
    reg = Registry(tmp_path / "registry", shipped)
    threads = [threading.Thread(target=reg.add, args=("tiny-remi", source, 1)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    numbers = [v.number for v in reg.versions("tiny-remi")]
    assert numbers == [1, 2, 3, 4, 5, 6, 7]
    assert all((tmp_path / "registry" / "tiny-remi" / f"v{n}" / "config.json").is_file() for n in numbers[1:])
