"""`precision="auto"` decided by a probe on this machine: recorded with its measurements, reused from the cache
on the next load, and measured again for another machine's (or torch's) record."""

from pathlib import Path

import pytest
import torch

from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.families.serving import clear_model_cache, generate_song, get_model
from museforge.generation.precision import (
    CACHE_FILE,
    MIN_SPEEDUP,
    PrecisionDecision,
    cache_key,
    cached_decision,
    model_key,
    save_decision,
)
from museforge.machine import cpu_model
from museforge.models.checkpoint import save_checkpoint
from museforge.tokenizers import build_tokenizer

REMI = build_tokenizer("remi")
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A small REMI Transformer (untrained: the decision is about speed and agreement, not about music)."""
    torch.manual_seed(0)
    config = TransformerConfig.preset("tiny", vocab_size=REMI.vocab_size, dropout=0.0)
    model = TransformerLM(config).eval()
    return save_checkpoint(
        tmp_path_factory.mktemp("p") / "ckpt", model, tokenizer=REMI.state_dict(), step=0, metrics={}
    )


def weights(ckpt: Path) -> Path:
    return ckpt / "model.safetensors"


def recorded(ckpt: Path, precision: str, cache_dir: Path, cpu: str | None = None) -> PrecisionDecision:
    decision = PrecisionDecision(
        precision, "recorded by the test", cpu or cpu_model(), torch.__version__, model_key(weights(ckpt)), 1
    )
    save_decision(decision, cache_dir)
    return decision


def test_the_probe_decides_records_and_is_reused(ckpt, tmp_path):
    clear_model_cache()
    loaded = get_model(ckpt, precision="auto", cache_dir=tmp_path)
    decision = loaded.precision_decision
    assert decision is not None and not decision.cached
    assert decision.cpu == cpu_model() and decision.torch == torch.__version__ and decision.threads >= 1
    assert decision.fp32_tok_s > 0 and decision.fp16_tok_s > 0
    faster = decision.fp16_tok_s / decision.fp32_tok_s
    if abs(faster - MIN_SPEEDUP) > 0.01:  # the rates are rounded: right at the threshold either way is fine
        assert decision.precision == ("fp16" if faster > MIN_SPEEDUP else "fp32")
    assert (loaded.half is not None) == (decision.precision == "fp16")
    assert loaded.sampler(1)[1] == decision.precision
    song = generate_song(loaded, style=REMI.config.styles[0] if REMI.config.styles else None, bars=1, seed=0)[
        0
    ]
    assert song.params["precision"] == decision.precision
    assert song.params["precision_decision"] == str(decision) and "by probe" in str(decision)

    clear_model_cache()
    again = get_model(ckpt, precision="auto", cache_dir=tmp_path).precision_decision
    assert again is not None and again.cached and "by cached probe" in str(again)
    assert {**again.to_dict(), "cached": False} == decision.to_dict()


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_a_recorded_decision_is_followed(ckpt, tmp_path, precision):
    clear_model_cache()
    recorded(ckpt, precision, tmp_path)
    loaded = get_model(ckpt, precision="auto", cache_dir=tmp_path)
    assert loaded.precision_decision.cached and loaded.precision_decision.reason == "recorded by the test"
    assert loaded.precision == ("fp16 up to batch 4" if precision == "fp16" else "fp32")
    assert loaded.sampler(8)[1] == "fp32"


def test_another_machines_record_is_not_reused(ckpt, tmp_path):
    clear_model_cache()
    other = recorded(ckpt, "fp16", tmp_path, cpu="Some Other CPU @ 1.00GHz")
    assert cached_decision(weights(ckpt), CPU, tmp_path) is None
    decision = get_model(ckpt, precision="auto", cache_dir=tmp_path).precision_decision
    assert not decision.cached and decision.cpu == cpu_model() and decision.fp32_tok_s > 0
    entries = (tmp_path / CACHE_FILE).read_text(encoding="utf-8")
    assert cache_key(other.cpu, other.torch, other.model) in entries  # kept for that machine
    assert cache_key(cpu_model(), torch.__version__, model_key(weights(ckpt))) in entries


def test_a_damaged_cache_is_measured_again(ckpt, tmp_path):
    clear_model_cache()
    (tmp_path / CACHE_FILE).write_text("{not json", encoding="utf-8")
    decision = get_model(ckpt, precision="auto", cache_dir=tmp_path).precision_decision
    assert not decision.cached and cached_decision(weights(ckpt), CPU, tmp_path) is not None
