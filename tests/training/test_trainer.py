"""The trainer on real music (Bach chorales as performance events): overfitting, schedule, exact resume,
best checkpoint and early stopping, and DDP over two gloo processes."""

import csv
import itertools
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import music21
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from museforge.data.formats import load_score
from museforge.families import load_checkpoint
from museforge.families.performance.model import PerformanceRNN, PerformanceRNNConfig, controls_for_events
from museforge.families.remi.model import TransformerConfig, TransformerLM
from museforge.tokenizers import build_tokenizer
from museforge.training import TrainConfig, Trainer, lm_step
from museforge.training.trainer import TrainResult, counts_as_gain, cpu_has_bf16

TOKENIZER = build_tokenizer("performance")


def chorale_tokens(name: str) -> np.ndarray:
    return TOKENIZER.encode(load_score(music21.corpus.getWork(name))).astype(np.int64)


def event_controls(tokens: np.ndarray) -> torch.Tensor:
    """Magenta's per-step controls [T, 22] of a performance event sequence."""
    return controls_for_events(TOKENIZER.event_times(tokens), TOKENIZER.onset_pitches(tokens))


class Windows(Dataset):
    """Non-overlapping windows of ``length`` tokens of one event sequence (with their controls if given)."""

    def __init__(self, tokens: np.ndarray, length: int, controls: torch.Tensor | None = None) -> None:
        self.tokens = torch.as_tensor(tokens, dtype=torch.long)
        self.controls = controls
        self.length = length

    def __len__(self) -> int:
        return len(self.tokens) // self.length

    def __getitem__(self, i: int):
        s = slice(i * self.length, (i + 1) * self.length)
        if self.controls is None:
            return self.tokens[s]
        return {"input_ids": self.tokens[s], "controls": self.controls[s]}


@pytest.fixture(scope="module")
def bwv66() -> np.ndarray:
    return chorale_tokens("bach/bwv66.6")


def tiny_transformer(seed: int = 0, dropout: float = 0.0) -> TransformerLM:
    torch.manual_seed(seed)
    return TransformerLM(TransformerConfig.preset("tiny", vocab_size=TOKENIZER.vocab_size, dropout=dropout))


def read_log(out_dir: Path, split: str = "train") -> list[dict[str, str]]:
    with (Path(out_dir) / "log.csv").open() as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == split]


def quiet(tmp_path: Path, **kw) -> TrainConfig:
    base = {
        "out_dir": str(tmp_path),
        "progress": False,
        "warmup_steps": 2,
        "log_every": 1,
        "checkpoint_every": 1000,
    }
    return TrainConfig(**{**base, **kw})


def test_transformer_overfits_one_batch(tmp_path, bwv66):
    data = Windows(bwv66[: 4 * 48], 48)
    cfg = quiet(tmp_path, batch_size=4, epochs=120, lr=3e-3, warmup_steps=10, min_lr_ratio=1.0)
    trainer = Trainer(tiny_transformer(), data, cfg, tokenizer=TOKENIZER.state_dict())
    result = trainer.fit()
    losses = [float(r["loss"]) for r in read_log(tmp_path)]
    assert result.step == 120 and len(losses) == 120
    assert losses[0] > 5.0 and losses[-1] < 0.5
    ck = load_checkpoint(tmp_path / "last")
    assert ck.step == 120 and ck.tokenizer == TOKENIZER.state_dict()
    batch = torch.stack([data[i] for i in range(4)])
    loss, _ = lm_step(ck.model, batch)
    assert loss.item() < 0.5


def test_performance_rnn_with_controls_overfits_one_batch(tmp_path, bwv66):
    controls = event_controls(bwv66)
    data = Windows(bwv66[: 2 * 64], 64, controls[: 2 * 64])
    torch.manual_seed(0)
    model = PerformanceRNN(PerformanceRNNConfig(embed_dim=64, hidden_size=128, n_layers=1))
    cfg = quiet(tmp_path, batch_size=2, epochs=80, lr=1e-2, warmup_steps=5, min_lr_ratio=1.0, grad_clip=3.0)
    Trainer(model, data, cfg).fit()
    losses = [float(r["loss"]) for r in read_log(tmp_path)]
    assert losses[0] > 5.0 and losses[-1] < 0.5


def test_bf16_on_a_cpu_autocasts_the_step_and_still_learns(tmp_path, bwv66):
    """``precision="bf16"`` is opt-in on a CPU (``auto`` stays fp32 there): the step's loss moves off fp32's
    by rounding only, the weights stay fp32, and training in it lowers the loss; a CPU without bf16 kernels
    refuses it up front."""
    controls = event_controls(bwv66)
    data = Windows(bwv66[: 2 * 64], 64, controls[: 2 * 64])
    batch = {
        "input_ids": torch.stack([data[i]["input_ids"] for i in range(2)]),
        "controls": controls[:128].view(2, 64, -1),
    }
    if not cpu_has_bf16():
        model = PerformanceRNN(PerformanceRNNConfig(embed_dim=64, hidden_size=128, n_layers=1))
        with pytest.raises(ValueError, match="bf16 needs a CPU"):
            Trainer(model, data, quiet(tmp_path / "bf16", batch_size=2, precision="bf16"))
        return
    losses = {}
    for precision in ("auto", "bf16"):
        torch.manual_seed(0)
        model = PerformanceRNN(PerformanceRNNConfig(embed_dim=64, hidden_size=128, n_layers=1))
        cfg = quiet(
            tmp_path / precision,
            batch_size=2,
            epochs=30,
            lr=1e-2,
            warmup_steps=5,
            min_lr_ratio=1.0,
            grad_clip=3.0,
            precision=precision,
        )
        trainer = Trainer(model, data, cfg)
        with trainer._autocast():
            losses[precision] = lm_step(model, batch)[0].item()
        trainer.fit()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        logged = [float(r["loss"]) for r in read_log(tmp_path / precision)]
        assert logged[-1] < 0.5 * logged[0]
    assert losses["bf16"] != losses["auto"]
    assert losses["bf16"] == pytest.approx(losses["auto"], rel=0.01)


def test_learning_rate_warms_up_then_decays_to_the_floor(tmp_path, bwv66):
    cfg = quiet(tmp_path, batch_size=1, epochs=1, max_steps=20, lr=1e-3, warmup_steps=5, min_lr_ratio=0.1)
    trainer = Trainer(tiny_transformer(), Windows(bwv66, 16), cfg)
    lrs = [trainer._lr_factor(s) * cfg.lr for s in range(20)]
    assert lrs[:5] == pytest.approx([2e-4, 4e-4, 6e-4, 8e-4, 1e-3])
    assert all(a >= b for a, b in itertools.pairwise(lrs[4:]))
    assert lrs[-1] == pytest.approx(1e-4, rel=0.02)
    trainer.fit()
    assert [float(r["lr"]) for r in read_log(tmp_path)] == pytest.approx(lrs)


def test_resume_reproduces_the_uninterrupted_loss_trajectory(tmp_path, bwv66):
    # dropout (RNG), accumulation and epoch boundaries with evaluation are all crossed by the interruption
    data, held_out = Windows(bwv66[:300], 20), Windows(bwv66[300:], 20)
    cfg = dict(batch_size=2, grad_accum=2, epochs=4, max_steps=14, lr=2e-3)
    straight = Trainer(tiny_transformer(dropout=0.1), data, quiet(tmp_path / "a", **cfg), eval_data=held_out)
    straight.fit()
    first = Trainer(tiny_transformer(dropout=0.1), data, quiet(tmp_path / "b", **cfg), eval_data=held_out)
    first.fit(until_step=5)
    assert load_checkpoint(tmp_path / "b" / "last").step == 5
    second = Trainer(
        tiny_transformer(seed=99, dropout=0.1), data, quiet(tmp_path / "b", **cfg), eval_data=held_out
    )
    result = second.fit(resume=True)
    assert result.step == 14
    changed = Trainer(tiny_transformer(), data, quiet(tmp_path / "b", **{**cfg, "batch_size": 3}))
    with pytest.raises(ValueError, match="batch_size"):
        changed.fit(resume=True)
    a, b = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert [r["step"] for r in b] == [str(s) for s in range(1, 15)]
    assert [r["loss"] for r in a] == [r["loss"] for r in b]  # bitwise: the CSV holds full float repr
    assert [r["loss"] for r in read_log(tmp_path / "a", "eval")] == [
        r["loss"] for r in read_log(tmp_path / "b", "eval")
    ]
    for p, q in zip(straight.model.parameters(), second.model.parameters(), strict=True):
        assert torch.equal(p, q)


class FailsAfter(torch.utils.data.Dataset):
    """A dataset whose reads fail after ``reads`` of them, as a run dies (a full disk, a killed job)."""

    def __init__(self, inner: torch.utils.data.Dataset, reads: int) -> None:
        self.inner, self.reads = inner, reads

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        self.reads -= 1
        if self.reads < 0:
            raise RuntimeError("the run died")
        return self.inner[i]


def test_a_run_that_dies_mid_epoch_resumes_from_the_last_epoch_boundary(tmp_path, bwv66):
    """Each finished epoch rewrites last/ (not only every ``checkpoint_every`` steps), so a run that dies in
    epoch 2 resumes from the end of epoch 1 and still ends with the uninterrupted run's weights."""
    data, held_out = Windows(bwv66[:300], 20), Windows(bwv66[300:], 20)
    cfg = dict(batch_size=2, grad_accum=2, epochs=3, lr=2e-3)
    straight = Trainer(tiny_transformer(), data, quiet(tmp_path / "a", **cfg), eval_data=held_out)
    straight.fit()
    per_epoch = straight.batches_per_epoch * 2  # reads of one epoch
    dying = Trainer(
        tiny_transformer(), FailsAfter(data, per_epoch + 5), quiet(tmp_path / "b", **cfg), eval_data=held_out
    )
    with pytest.raises(RuntimeError, match="the run died"):
        dying.fit()
    assert load_checkpoint(tmp_path / "b" / "last").step == straight.step // 3  # the end of epoch 1
    resumed = Trainer(tiny_transformer(seed=5), data, quiet(tmp_path / "b", **cfg), eval_data=held_out)
    assert resumed.fit(resume=True).step == straight.step
    for p, q in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(p, q)


def fit_with_held_out(tmp_path: Path, bwv66: np.ndarray, **config) -> tuple[TrainResult, list[float]]:
    """A tiny Transformer trained on one chorale and evaluated on another; the run and its evaluation losses."""
    train, held_out = Windows(bwv66, 32), Windows(chorale_tokens("bach/bwv7.7"), 32)
    cfg = quiet(tmp_path, batch_size=4, **config)
    result = Trainer(
        tiny_transformer(), train, cfg, eval_data=held_out, tokenizer={"name": "performance"}
    ).fit()
    return result, [float(r["loss"]) for r in read_log(tmp_path, "eval")]


def test_best_checkpoint_and_early_stopping(tmp_path, bwv66):
    # train on one chorale, evaluate on another: the held-out loss falls, then rises as the model memorises
    result, evals = fit_with_held_out(
        tmp_path, bwv66, epochs=60, lr=1e-2, warmup_steps=5, min_lr_ratio=1.0, patience=3
    )
    assert result.stopped_early and len(evals) < 60
    best = min(evals)
    assert evals.index(best) == len(evals) - 4  # three epochs without improvement after the best
    assert result.best_eval_loss == pytest.approx(best)
    ck = load_checkpoint(tmp_path / "best")
    assert ck.metrics["eval_loss"] == pytest.approx(best)
    assert ck.metrics["eval_ppl"] == pytest.approx(math.exp(best))
    assert ck.step < load_checkpoint(tmp_path / "last").step


def test_a_gain_for_the_patience_must_beat_the_last_one_by_min_delta():
    assert counts_as_gain(5.0, None, 0.1)  # the first evaluation
    assert counts_as_gain(0.59, 0.6) and not counts_as_gain(0.6, 0.6)
    assert not counts_as_gain(0.595, 0.6, 0.01) and counts_as_gain(0.589, 0.6, 0.01)


def test_min_delta_stops_a_run_that_creeps_but_best_keeps_the_lowest_loss(tmp_path, bwv66):
    """With a min_delta no evaluation reaches, patience 2 stops after three evaluations although the loss
    still falls; ``best`` is the lowest of them, not the first."""
    result, evals = fit_with_held_out(
        tmp_path, bwv66, epochs=20, lr=1e-3, warmup_steps=5, patience=2, min_delta=10.0
    )
    assert result.stopped_early and len(evals) == 3
    assert evals[-1] < evals[0]  # still improving, by less than min_delta
    assert load_checkpoint(tmp_path / "best").metrics["eval_loss"] == pytest.approx(min(evals))


def test_train_config_round_trip_and_validation(tmp_path):
    cfg = TrainConfig(out_dir=str(tmp_path), max_steps=10, grad_clip=None, patience=2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    for field, value in [
        ("grad_accum", 0),
        ("lr", 0.0),
        ("precision", "fp8"),
        ("min_delta", -0.1),
        ("max_steps", 0),
        ("grad_clip", -1.0),
    ]:
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_a_dataset_smaller_than_a_batch_is_refused(tmp_path, bwv66):
    with pytest.raises(ValueError, match="no full batch"):
        Trainer(tiny_transformer(), Windows(bwv66[:40], 20), quiet(tmp_path, batch_size=4))


def test_ddp_under_torchrun_on_two_gloo_processes_keeps_ranks_identical(tmp_path, bwv66):
    np.save(tmp_path / "tokens.npy", bwv66[: 24 * 12])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(Path(__file__).with_name("ddp_train.py")),
        str(tmp_path),
        str(tmp_path / "tokens.npy"),
    ]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert r0["step"] == r1["step"] == 6  # 12 windows / 2 ranks / batch 2 = 3 steps an epoch, 2 epochs
    assert all(torch.equal(a, b) for a, b in zip(r0["params"], r1["params"], strict=True))
    assert r0["eval"] == r1["eval"]  # evaluation is reduced across ranks
    assert len(read_log(tmp_path)) == 6  # only rank 0 logs
    ck = load_checkpoint(tmp_path / "last")
    assert ck.step == 6
    assert all(torch.equal(a, b) for a, b in zip(ck.model.parameters(), r0["params"], strict=True))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
