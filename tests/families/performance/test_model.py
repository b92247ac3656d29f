"""Performance RNN: Magenta's control encoding, state carry, and that controls reach the output."""

import numpy as np
import pytest
import torch

from museforge.families import build_model
from museforge.families.performance.model import (
    CONTROL_DIM,
    N_DENSITY_CLASSES,
    PerformanceRNN,
    PerformanceRNNConfig,
    density_class,
    encode_controls,
    performance_controls,
    unset_at_random,
)


def tiny() -> PerformanceRNN:
    torch.manual_seed(0)
    return PerformanceRNN(PerformanceRNNConfig(embed_dim=16, hidden_size=32, n_layers=2))


def test_defaults_are_magentas():
    cfg = PerformanceRNNConfig()
    assert (cfg.vocab_size, cfg.hidden_size, cfg.n_layers) == (388, 512, 3)
    assert CONTROL_DIM == 9 + 13


@pytest.mark.parametrize(
    ("density", "cls"), [(0.0, 0), (0.99, 0), (1.0, 1), (3.9, 2), (8.0, 4), (63.0, 6), (64, 7), (500, 7)]
)
def test_density_classes_follow_magentas_bins(density, cls):
    assert density_class(density) == cls


def test_encode_controls_sets_flags_for_unset_values():
    both = encode_controls(3, [2, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    assert both[3] == 1 and both[:N_DENSITY_CLASSES].sum() == 1 and both[N_DENSITY_CLASSES] == 0
    assert both[9:21].sum() == pytest.approx(1.0) and both[9] == pytest.approx(0.5) and both[21] == 0
    unset = encode_controls(None, None)
    assert unset.tolist() == [0.0] * 8 + [1.0] + [0.0] * 12 + [1.0]
    batch = encode_controls(torch.tensor([[2, -1]]), torch.tensor([[1.0] * 12, [float("nan")] * 12]))
    assert batch.shape == (1, 2, CONTROL_DIM)
    assert batch[0, 1, 8] == 1 and batch[0, 0, 8] == 0  # density unset only in step 2
    assert batch[0, 1, 21] == 1 and batch[0, 0, 21] == 0  # histogram unset only in step 2


@pytest.mark.parametrize(
    ("density", "hist", "word"),
    [
        (8, None, "density"),
        (-2, None, "density"),
        (1, [1.0] * 11, "12"),
        (1, [0.0] * 12, "positive"),
        (1, [-1.0] + [1.0] * 11, ">= 0"),
    ],
)
def test_bad_controls_are_named(density, hist, word):
    with pytest.raises(ValueError, match=word):
        encode_controls(density, hist)


def test_performance_controls_look_ahead_over_their_windows():
    # note-ons at 0 s (C), 0.5 s (E), 2.9 s (G), 3.5 s (C); other events carry -1
    times = np.array([0.0, 0.0, 0.5, 1.0, 2.9, 3.5, 3.5])
    pitches = np.array([60, -1, 64, -1, 67, 72, -1])
    classes, hist = performance_controls(times, pitches)
    # from t=0 the next 3 s hold 3 onsets -> 1 note/s -> class 1; from t=0.5 two -> 0.67 note/s -> class 0
    assert classes.tolist() == [1, 1, 0, 0, 0, 0, 0]
    assert hist.shape == (7, 12) and np.allclose(hist.sum(1), 1.0)
    assert hist[0][0] == pytest.approx(0.5, abs=0.02)  # C twice, E and G once within 5 s
    assert hist[0][[4, 7]] == pytest.approx([0.25, 0.25], abs=0.01)
    assert hist[-1][0] > 0.9  # only the last C is ahead


def test_state_carry_equals_full_forward():
    """Sampling feeds one step at a time (through `lstm_cell`, not the fused LSTM): the same logits as the whole
    sequence at once, for both layers' carried state."""
    model = tiny().eval()
    ids = torch.randint(0, 388, (2, 15))
    controls = encode_controls(torch.randint(-1, 8, (2, 15)), torch.rand(2, 15, 12))
    with torch.no_grad():
        full, _ = model(ids, controls)
        state, outs = None, []
        for t in range(15):
            out, state = model(ids[:, t : t + 1], controls[:, t : t + 1], state)
            outs.append(out)
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)


def test_controls_change_the_output_distribution():
    model = tiny().eval()
    ids = torch.randint(0, 388, (1, 10))
    with torch.no_grad():
        dense = model(ids, encode_controls(7, None).expand(1, 10, CONTROL_DIM))[0]
        sparse = model(ids, encode_controls(0, None).expand(1, 10, CONTROL_DIM))[0]
        unset = model(ids)[0]
    assert (dense - sparse).abs().max() > 1e-3
    assert (dense - unset).abs().max() > 1e-3


def test_control_shape_and_flag_errors():
    model = tiny()
    with pytest.raises(ValueError, match="controls must have shape"):
        model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 3, CONTROL_DIM))
    plain = PerformanceRNN(PerformanceRNNConfig(embed_dim=8, hidden_size=8, n_layers=1, use_controls=False))
    with pytest.raises(ValueError, match="use_controls"):
        plain(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, CONTROL_DIM))


def test_config_round_trip():
    cfg = PerformanceRNNConfig(hidden_size=64, n_layers=2, dropout=0.1)
    assert PerformanceRNNConfig.from_dict(cfg.to_dict()) == cfg
    assert isinstance(build_model(cfg.to_dict()), PerformanceRNN)
    with pytest.raises(ValueError, match="hidden_size"):
        PerformanceRNNConfig(hidden_size=0)


def test_unset_at_random_drops_whole_controls_per_sequence():
    controls = encode_controls(torch.full((200, 7), 3), torch.rand(200, 7, 12))  # [sequences, T, 22]
    dropped = unset_at_random(controls, 0.5, torch.Generator().manual_seed(0))
    density_unset, hist_unset = dropped[:, :, 8] == 1, dropped[:, :, 21] == 1
    assert (density_unset == density_unset[:, :1]).all() and (hist_unset == hist_unset[:, :1]).all()
    assert 60 < density_unset[:, 0].sum() < 140 and 60 < hist_unset[:, 0].sum() < 140
    assert (dropped[density_unset][:, :8] == 0).all() and (dropped[hist_unset][:, 9:21] == 0).all()
    kept = ~density_unset[:, 0] & ~hist_unset[:, 0]
    assert torch.equal(dropped[kept], controls[kept])
    with pytest.raises(ValueError, match="p must"):
        unset_at_random(controls, 1.5)
