"""The shared sampling loop, on a Transformer: the cache agrees with full passes, hooks are obeyed, seeds
reproduce."""

import itertools

import pytest
import torch

from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.generation import generate_transformer

V = 40


@pytest.fixture(scope="module")
def lm() -> TransformerLM:
    torch.manual_seed(0)
    return TransformerLM(TransformerConfig.preset("tiny", vocab_size=V, max_seq_len=64)).eval()


def test_greedy_cached_decoding_picks_the_argmax_of_a_full_pass(lm):
    out = generate_transformer(lm, [1, 2, 3], 30, num_samples=2, temperature=0)
    tokens = out.tokens
    assert tokens.shape == (2, 33) and out.lengths.tolist() == [33, 33]
    with torch.no_grad():
        full, _ = lm(tokens)
    assert torch.equal(full[:, 2:-1].argmax(-1), tokens[:, 3:])


def test_cache_and_no_cache_sample_the_same_tokens(lm):
    a = generate_transformer(lm, [5], 40, num_samples=3, seed=11, top_k=20)
    b = generate_transformer(lm, [5], 40, num_samples=3, seed=11, top_k=20, use_cache=False)
    c = generate_transformer(lm, [5], 40, num_samples=3, seed=12, top_k=20)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)
    assert not torch.equal(a.tokens[0], a.tokens[1])  # batch rows are independent samples


def test_generation_slides_past_the_context_window(lm):
    out = generate_transformer(lm, [1], 150, seed=0)
    assert out.tokens.shape == (1, 151)
    assert int(out.tokens.max()) < V


def test_mask_and_stop_hooks_are_obeyed(lm):
    eos, calls = 0, []

    def alternate(prefix):
        """Even token after an odd one and vice versa; EOS (0) only once 10 tokens exist."""
        calls.append(prefix.shape[1])
        last_even = prefix[:, -1] % 2 == 0  # [B]
        ids = torch.arange(V)
        allowed = (ids % 2 == 1) == last_even.unsqueeze(-1)  # [B, V]
        allowed[:, eos] = prefix.shape[1] >= 10
        return allowed

    def stop(seqs):
        return seqs[:, -1] == eos

    for seed in range(10):
        out = generate_transformer(
            lm, [3], 60, num_samples=4, seed=seed, mask_fn=alternate, stop_fn=stop, pad_id=V - 1
        )
        for row in out.sequences():
            body = row[:-1] if row[-1] == eos else row
            assert all((a % 2) != (b % 2) for a, b in itertools.pairwise(body))
            assert eos not in row[:10]
            assert eos not in body
        for row, n in zip(out.tokens.tolist(), out.lengths.tolist(), strict=True):
            assert all(t == V - 1 for t in row[n:])
            assert n == len(row) or row[n - 1] == eos
    assert calls[0] == 1


def test_bad_arguments_are_named(lm):
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_transformer(lm, [1], 0)
    with pytest.raises(ValueError, match="prompt"):
        generate_transformer(lm, [], 3)
    with pytest.raises(ValueError, match="num_samples"):
        generate_transformer(lm, [1], 3, num_samples=0)
    with pytest.raises(ValueError, match="pad_id"):
        generate_transformer(lm, [1], 3, pad_id=-1)
