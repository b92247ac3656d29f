"""The Performance RNN's sampling loop: its state carry agrees with a full pass under Magenta's control
alignment, and every form of controls gives the same music for the same seed."""

import pytest
import torch

from museforge.families.performance.decode import generate_performance
from museforge.families.performance.model import (
    CONTROL_DIM,
    PerformanceRNN,
    PerformanceRNNConfig,
    encode_controls,
)

V = 40


@pytest.fixture(scope="module")
def rnn() -> PerformanceRNN:
    torch.manual_seed(0)
    return PerformanceRNN(PerformanceRNNConfig(vocab_size=V, embed_dim=8, hidden_size=16, n_layers=2)).eval()


def test_rnn_greedy_sampling_matches_a_full_pass_with_aligned_controls(rnn):
    controls = encode_controls(torch.randint(-1, 8, (2, 26)), torch.rand(2, 26, 12))  # [B, T, 22]
    out = generate_performance(rnn, torch.tensor([[4, 5], [6, 7]]), 24, controls=controls, temperature=0)
    tokens = out.tokens  # [2, 26]
    with torch.no_grad():
        # Magenta's alignment: the input at position p carries the control of position p + 1
        full, _ = rnn(tokens[:, :-1], controls[:, 1:])
    assert torch.equal(full[:, 1:].argmax(-1), tokens[:, 2:])


def test_rnn_control_forms_and_reproducibility(rnn):
    fixed = encode_controls(6, None)
    a = generate_performance(rnn, [1], 30, controls=fixed, num_samples=2, seed=3)
    b = generate_performance(rnn, [1], 30, controls=lambda p, prefix: fixed, num_samples=2, seed=3)
    c = generate_performance(rnn, [1], 30, controls=fixed, num_samples=2, seed=4)
    assert torch.equal(a.tokens, b.tokens)
    assert not torch.equal(a.tokens, c.tokens)
    with pytest.raises(ValueError, match="controls"):
        generate_performance(rnn, [1], 5, controls=torch.zeros(CONTROL_DIM + 1))
    with pytest.raises(ValueError, match="positions"):
        generate_performance(rnn, [1], 5, controls=torch.zeros(1, 3, CONTROL_DIM))
