"""The REMI Transformer's mechanics: causality, KV-cache equivalence, configs and presets."""

import pytest
import torch

from museforge.families import build_model
from museforge.families.remi.model import PRESETS, TransformerConfig, TransformerLM


def tiny(**overrides) -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(TransformerConfig.preset("tiny", vocab_size=61, dropout=0.0, **overrides))


@pytest.mark.parametrize("norm", ["rms", "layer"])
def test_no_gradient_flows_from_future_positions(norm):
    model = tiny(norm=norm)
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["emb"] = output

    model.tok_emb.register_forward_hook(keep)
    ids = torch.randint(0, 61, (2, 12))
    logits, _ = model(ids)
    t = 5
    logits[:, t].sum().backward()
    grad = captured["emb"].grad  # [B, T, D]
    assert torch.count_nonzero(grad[:, t + 1 :]) == 0
    assert grad[:, : t + 1].abs().sum(-1).gt(0).all()  # every past position does influence step t


def test_kv_cache_decoding_equals_full_forward():
    model = tiny().eval()
    ids = torch.randint(0, 61, (3, 20))
    with torch.no_grad():
        full, _ = model(ids)
        # prefill 7 steps, then one at a time, then a chunk of 4 (exercises the offset causal mask)
        parts = [ids[:, :7], *[ids[:, i : i + 1] for i in range(7, 16)], ids[:, 16:]]
        cache = model.new_cache()
        outs = [model(p, past_kv=cache)[0] for p in parts]
    assert cache.length == 20
    torch.testing.assert_close(torch.cat(outs, dim=1), full, rtol=1e-5, atol=1e-5)


def test_keep_rows_continues_each_row_from_its_sources_prefix():
    """Best-of-N sampling keeps one candidate: after `keep_rows(sources, L)` row i decodes as if it had been fed
    row sources[i]'s first L tokens and nothing else (the steps after L, here 6 of them, are forgotten)."""
    model = tiny().eval()
    ids = torch.randint(0, 61, (4, 18))
    sources = [1, 1, 3, 3]  # e.g. two candidates and their guidance references, the second pair kept
    with torch.no_grad():
        _, cache = model(ids[:, :12], use_cache=True)
        model(ids[:, 12:], past_kv=cache)
        cache.keep_rows(sources, 12)
        assert cache.length == 12
        nxt = torch.full((4, 1), 7)
        got, _ = model(nxt, past_kv=cache)  # [4, 1, V]
        expected, _ = model(torch.cat([ids[:, :12], nxt], dim=1))  # [4, 13, V]
    for row, source in enumerate(sources):
        torch.testing.assert_close(got[row, 0], expected[source, -1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="cannot keep 14 steps"):
        cache.keep_rows(sources, 14)
    with pytest.raises(ValueError, match="a row for each of the cache's 4 rows"):
        cache.keep_rows([0, 1], 10)


@pytest.mark.parametrize("overrides", [{}, {"norm": "layer", "bias": True}])
def test_incremental_decoder_gives_the_logits_and_cache_of_a_cached_forward(overrides):
    """The flat decoding step (norms folded into the products after them) computes the modules' numbers up to
    float32 rounding, and leaves the same keys and values in its cache."""
    model = tiny(**overrides).eval()
    ids = torch.randint(0, 61, (3, 20))
    step = model.incremental_decoder()
    with torch.no_grad():
        _, cache = model(ids[:, :5], use_cache=True)
        _, step_cache = model(ids[:, :5], use_cache=True)
        for t in range(5, 20):
            expected, _ = model(ids[:, t : t + 1], past_kv=cache)
            torch.testing.assert_close(step(ids[:, t], step_cache), expected[:, 0], rtol=1e-5, atol=1e-6)
        assert step_cache.length == cache.length == 20
        for got, want in zip(step_cache.keys + step_cache.values, cache.keys + cache.values, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        fresh = model.new_cache()  # it can also start a cache
        torch.testing.assert_close(step(ids[:, 0], fresh), model(ids[:, :1])[0][:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(RuntimeError, match="eval"):
        model.train().incremental_decoder()


def test_weights_are_tied_and_untied_on_request():
    tied, untied = tiny(), tiny(tie_weights=False)
    assert tied.lm_head.weight is tied.tok_emb.weight
    assert untied.lm_head.weight is not untied.tok_emb.weight
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == 61 * 32


def test_positions_beyond_max_seq_len_are_refused():
    model = tiny(max_seq_len=16)
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = model.new_cache()
    model(torch.zeros(1, 16, dtype=torch.long), past_kv=cache)
    with pytest.raises(ValueError, match="exceed max_seq_len=16"):
        model(torch.zeros(1, 1, dtype=torch.long), past_kv=cache)


def test_config_round_trip_and_registry():
    cfg = TransformerConfig.preset("small", vocab_size=357, dropout=0.05)
    data = cfg.to_dict()
    assert data["model"] == "transformer" and data["d_model"] == PRESETS["small"]["d_model"]
    assert TransformerConfig.from_dict(data) == cfg
    assert isinstance(build_model(data), TransformerLM)
    assert build_model(cfg).config == cfg


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"n_heads": 3}, "n_heads"),
        ({"dropout": 1.0}, "dropout"),
        ({"norm": "batch"}, "norm"),
        ({"d_ff": 0}, "d_ff"),
    ],
)
def test_bad_config_values_are_named(changes, word):
    with pytest.raises(ValueError, match=word):
        TransformerConfig.preset("tiny", vocab_size=61, **changes)


def test_unknown_fields_and_presets_are_errors():
    with pytest.raises(ValueError, match="d_modle"):
        TransformerConfig.from_dict({"vocab_size": 10, "d_modle": 3})
    with pytest.raises(ValueError, match="preset"):
        TransformerConfig.preset("huge", vocab_size=10)
    with pytest.raises(ValueError, match="performance_rnn"):
        TransformerConfig.from_dict({"model": "performance_rnn", "vocab_size": 10})


def test_preset_sizes_are_ordered():
    sizes = [
        sum(p.numel() for p in TransformerLM(TransformerConfig.preset(n, 357)).parameters()) for n in PRESETS
    ]
    assert sizes == sorted(sizes)
    assert 2e6 < sizes[1] < 6e6  # small: a few MB in safetensors, samples fast on 2 CPU cores


def test_a_half_precision_model_keeps_float32_attention_and_agrees_with_float32():
    """On a CPU the float16 model's cache (and so its attention) stays float32, prefill and steps alike, and its
    next-token distributions stay within rounding of the float32 model's."""
    model = tiny().eval()
    half = tiny().eval().half()
    ids = torch.randint(0, 61, (2, 24))
    with torch.no_grad():
        full, _ = model(ids)
        _, cache = half(ids[:, :8], use_cache=True)
        step = half.incremental_decoder()
        outs = [step(ids[:, t], cache) for t in range(8, 24)]
    assert cache.keys[0].dtype == cache.values[-1].dtype == torch.float32
    assert all(o.dtype == torch.float16 for o in outs)
    ref = full[:, 8:].log_softmax(-1)
    low = torch.stack(outs, dim=1).float().log_softmax(-1)
    assert (ref - low).abs().max() < 0.02
