"""Sampling rules on hand-made distributions: exact sets kept, masks obeyed, seeds reproducible."""

import pytest
import torch

from museforge.generation import (
    apply_mask,
    apply_temperature,
    make_generator,
    sample,
    top_k_filter,
    top_p_filter,
)
from museforge.generation.sampling import draw

NEG_INF = float("-inf")


def test_temperature_scales_logits_and_sharpens_or_flattens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    assert torch.equal(apply_temperature(logits, 0.5), logits * 2)
    p1 = logits.softmax(-1)[0, 0]
    assert (
        apply_temperature(logits, 0.5).softmax(-1)[0, 0]
        > p1
        > apply_temperature(logits, 2.0).softmax(-1)[0, 0]
    )
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(logits, 0.0)


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    out = top_k_filter(logits, 2)
    assert torch.isfinite(out).sum(-1).tolist() == [2, 2]
    assert torch.isfinite(out[1]).tolist() == [True, True, False, False, False]
    assert torch.equal(top_k_filter(logits, 10), logits)
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(logits, 0)


@pytest.mark.parametrize(
    ("p", "kept"),
    [
        (0.5, [True, False, False, False]),
        (0.51, [True, True, False, False]),
        (0.8, [True, True, False, False]),
        (0.81, [True, True, True, False]),
        (1.0, [True, True, True, True]),
        (1e-6, [True, False, False, False]),
    ],
)
def test_top_p_keeps_the_smallest_set_reaching_p(p, kept):
    probs = torch.tensor(
        [0.15, 0.5, 0.3, 0.05]
    )  # sorted: 0.5, 0.3, 0.15, 0.05 (cumulative 0.5, 0.8, 0.95, 1)
    order = [1, 2, 0, 3]
    out = top_p_filter(probs.log().unsqueeze(0), p)[0]
    expected = [False] * 4
    for rank, keep in enumerate(kept):
        expected[order[rank]] = keep
    assert torch.isfinite(out).tolist() == expected
    kept_mass = probs[torch.isfinite(out)].sum().item()
    assert kept_mass >= p - 1e-6


def test_top_p_works_row_by_row():
    logits = torch.tensor([[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    out = top_p_filter(logits, 0.9)
    assert torch.isfinite(out).sum(-1).tolist() == [1, 3]


def test_masked_tokens_are_never_sampled():
    logits = torch.randn(64, 20)
    allowed = torch.zeros(64, 20, dtype=torch.bool)
    allowed[:, 3] = True
    allowed[::2, 17] = True
    hits = torch.zeros(20, dtype=torch.long)
    for seed in range(100):
        tokens = sample(logits, make_generator(seed), temperature=1.5, top_p=0.99, mask=allowed)
        assert allowed[torch.arange(64), tokens].all()
        hits += torch.bincount(tokens, minlength=20)
    assert hits[3] > 0 and hits[17] > 0  # both allowed tokens do occur
    with pytest.raises(ValueError, match="allows no token"):
        apply_mask(logits, torch.zeros(20, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        apply_mask(logits, torch.ones(20))


def test_same_seed_same_sample_and_draws_follow_the_distribution():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1])).expand(4000, 3)
    a = sample(logits, make_generator(7))
    b = sample(logits, make_generator(7))
    c = sample(logits, make_generator(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    freq = torch.bincount(a, minlength=3).float() / 4000
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.03)


def test_draw_makes_the_draws_of_torch_multinomial():
    probs = torch.rand(6, 50).softmax(-1)
    probs[:, ::3] = 0  # masked tokens
    ours, theirs = make_generator(3), make_generator(3)
    for _ in range(20):
        expected = torch.multinomial(probs, 1, generator=theirs).squeeze(-1)
        assert torch.equal(draw(probs, ours), expected)


def test_greedy_and_single_row_shapes():
    logits = torch.tensor([0.1, 2.0, -1.0])
    assert sample(logits, temperature=0).item() == 1
    assert sample(logits, make_generator(0), top_k=1).dim() == 0
    assert sample(logits.expand(5, 3), make_generator(0), top_k=1).tolist() == [1] * 5
    masked = sample(logits, temperature=0, mask=torch.tensor([True, False, True]))
    assert masked.item() == 0
