"""One training loop for every model family.

A family supplies a ``step_fn(model, batch) -> (loss, metrics)`` (one with an ``on_step(step)`` method is told
the optimizer step before each step, for schedules inside the loss); the trainer owns everything around it:
AdamW, warm-up + cosine learning rate, gradient accumulation and clipping, bf16 autocast on CUDA, seeding,
evaluation each epoch, best/last checkpoints, early stopping, exact resume, a progress bar and a CSV log.
Launched by ``torchrun`` it trains with DDP and a `DistributedSampler`, unchanged; only rank 0 writes.

Run directory layout::

    last/        checkpoint + training_state.pt, rewritten every ``checkpoint_every`` steps and each epoch
    best/        checkpoint with the lowest evaluation loss so far
    log.csv      one row per logged training step and per evaluation
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Self

import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors.torch import load_model
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from museforge.models.checkpoint import load_training_state, save_checkpoint
from museforge.training.distributed import (
    DistInfo,
    init_distributed,
    rng_state,
    seed_everything,
    set_rng_state,
)

StepFn = Callable[[nn.Module, Any], tuple[Tensor, dict[str, float]]]
IGNORE_INDEX = -100
PRECISIONS = ("auto", "bf16", "fp32")


def cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 kernels for this CPU (AVX-512 or AMX): without them bf16 autocast fails in some
    primitives (an LSTM's) instead of running slowly."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


LOG_FIELDS = ("step", "epoch", "split", "loss", "ppl", "lr", "grad_norm", "tokens_per_s", "elapsed_s")


@dataclass
class TrainConfig:
    """Every knob of a training run. Plain values only, so it round-trips through JSON."""

    out_dir: str = "runs/run"
    epochs: int = 10
    max_steps: int | None = None  # optimizer steps; the run ends at whichever of epochs/max_steps comes first
    batch_size: int = 16  # per process, per micro-batch
    eval_batch_size: int | None = None  # default: batch_size
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 100
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float | None = 1.0
    seed: int = 0
    precision: str = "auto"  # auto: bf16 autocast on CUDA, fp32 elsewhere
    checkpoint_every: int = 500  # steps between rewrites of last/
    log_every: int = 10
    patience: int | None = None  # epochs without a better evaluation loss before stopping
    min_delta: float = 0.0  # for patience, "better" means lower by more than this (best/ keeps any gain)
    max_eval_batches: int | None = None
    num_workers: int = 0
    shuffle: bool = True
    drop_last: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        positive = ("epochs", "batch_size", "grad_accum", "checkpoint_every", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_batch_size", "patience", "max_eval_batches"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.num_workers < 0 or self.min_delta < 0:
            raise ValueError("warmup_steps, weight_decay, num_workers and min_delta must be >= 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ValueError(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**data)


def counts_as_gain(loss: float, reference: float | None, min_delta: float = 0.0) -> bool:
    """Whether an evaluation resets the patience: it beats the loss of the last one that did (``reference``;
    None before the first) by more than ``min_delta``. Many small gains in a row therefore still add up to a
    reset once they pass ``min_delta``, while a run creeping down by less than that per evaluation stops."""
    return reference is None or loss < reference - min_delta


def lm_step(model: nn.Module, batch: Tensor | dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
    """Next-token cross-entropy, the step of the autoregressive families.

    ``batch`` is ids [B, T] or a dict with ``input_ids`` [B, T] and optionally ``labels`` [B, T] (-100 =
    ignored) or ``attention_mask`` [B, T] (0 = padding). Any other entry is a per-position input [B, T, ...]
    (e.g. Performance-RNN ``controls``) passed to the model by name, aligned with the *target* positions:
    the model reads token t together with what is known about token t+1, as Magenta aligns controls.
    """
    if isinstance(batch, Tensor):
        batch = {"input_ids": batch}
    ids = batch["input_ids"]  # [B, T]
    if ids.dim() != 2 or ids.shape[1] < 2:
        raise ValueError(f"input_ids must be [batch, time >= 2], got shape {tuple(ids.shape)}")
    labels = batch.get("labels")
    if labels is None:
        mask = batch.get("attention_mask")
        labels = ids if mask is None else ids.masked_fill(mask == 0, IGNORE_INDEX)
    extras = {k: v[:, 1:] for k, v in batch.items() if k not in ("input_ids", "labels", "attention_mask")}
    logits, _ = model(ids[:, :-1], **extras)  # [B, T-1, V]
    targets = labels[:, 1:]  # [B, T-1]
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)
    return loss, {"tokens": float((targets != IGNORE_INDEX).sum())}


@dataclass
class TrainResult:
    """How a `Trainer.fit` call ended."""

    step: int
    epoch: int
    best_eval_loss: float | None
    last_eval: dict[str, float]
    stopped_early: bool
    out_dir: Path


class _ResumableSampler(Sampler[int]):
    """A `DistributedSampler` (one replica when not distributed) that can start mid-epoch, so a resumed run
    sees exactly the batches the interrupted run had not yet seen."""

    def __init__(self, inner: DistributedSampler) -> None:
        self.inner = inner
        self.skip = 0

    def set_position(self, epoch: int, skip: int) -> None:
        self.inner.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.inner), self.skip, None)

    def __len__(self) -> int:
        return len(self.inner) - self.skip


class Trainer:
    """Trains ``model`` on ``train_data`` as ``config`` says, on the device the model's parameters are on."""

    def __init__(
        self,
        model: nn.Module,
        train_data: Dataset,
        config: TrainConfig,
        *,
        eval_data: Dataset | None = None,
        step_fn: StepFn = lm_step,
        collate_fn: Callable[[list[Any]], Any] | None = None,
        tokenizer: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.model = model
        self.device = next(model.parameters()).device
        if config.precision == "bf16" and self.device.type == "cpu" and not cpu_has_bf16():
            raise ValueError(
                "bf16 needs a CPU whose oneDNN kernels do bf16 (AVX-512 or AMX); this one has none, and its "
                "LSTM and other primitives would fail mid-run: train with --precision fp32 (or auto)"
            )
        self.dist: DistInfo = init_distributed(self.device)
        self.train_data, self.eval_data = train_data, eval_data
        self.step_fn = step_fn
        self.collate_fn = collate_fn
        self.tokenizer = tokenizer if tokenizer is not None else {}
        self.out_dir = Path(config.out_dir)
        self.wrapped: nn.Module = model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # Rotary tables are constant buffers: no need to broadcast them every forward.
            self.wrapped = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
        self.sampler = _ResumableSampler(
            DistributedSampler(
                train_data, self.dist.world_size, self.dist.rank, shuffle=config.shuffle, seed=config.seed
            )
        )
        full = len(self.sampler.inner)
        self.batches_per_epoch = (
            full // config.batch_size if config.drop_last else math.ceil(full / config.batch_size)
        )
        if self.batches_per_epoch < 1:
            raise ValueError(
                f"the training set gives no full batch of {config.batch_size} per process ({full} examples)"
            )
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / config.grad_accum)
        self.total_steps = config.epochs * self.steps_per_epoch
        if config.max_steps is not None:
            self.total_steps = min(self.total_steps, config.max_steps)
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # micro-batches of the current epoch already trained on
        self.best_eval_loss: float | None = None
        self.bad_epochs = 0
        self.patience_ref: float | None = None  # the loss the patience counts from (see `counts_as_gain`)
        self.last_eval: dict[str, float] = {}
        self.last_train_loss = float("nan")

    def _make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW; matrices decay, norms and biases do not (decaying them only hurts)."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": self.config.weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        c = self.config
        fused = self.device.type == "cuda"
        return torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), fused=fused)

    def _lr_factor(self, step: int) -> float:
        """Linear warm-up to 1, then cosine down to ``min_lr_ratio`` at the last step."""
        c = self.config
        if step < c.warmup_steps:
            return (step + 1) / c.warmup_steps
        progress = min(1.0, (step - c.warmup_steps) / max(1, self.total_steps - 1 - c.warmup_steps))
        return c.min_lr_ratio + (1.0 - c.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _autocast(self) -> AbstractContextManager[Any]:
        p = self.config.precision
        if p == "bf16" or (p == "auto" and self.device.type == "cuda"):
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    def _loader(
        self, data: Dataset, sampler: Sampler[int], batch_size: int, drop_last: bool, seed: int
    ) -> DataLoader:
        # Its own generator: creating a DataLoader iterator must not consume the global torch RNG, or a
        # resumed run would drift from an uninterrupted one.
        return DataLoader(
            data,
            batch_size=batch_size,
            sampler=sampler,
            drop_last=drop_last,
            collate_fn=self.collate_fn,
            num_workers=self.config.num_workers,
            generator=torch.Generator().manual_seed(seed),
            pin_memory=self.device.type == "cuda",
        )

    def _to_device(self, batch: Any) -> Any:
        if isinstance(batch, Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, dict):
            return {k: self._to_device(v) for k, v in batch.items()}
        if isinstance(batch, list | tuple):
            return type(batch)(self._to_device(v) for v in batch)
        return batch

    # ---- checkpoints -------------------------------------------------------------------------------------

    def _training_state(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_eval_loss": self.best_eval_loss,
            "bad_epochs": self.bad_epochs,
            "patience_ref": self.patience_ref,
            "world_size": self.dist.world_size,
            "train_config": self.config.to_dict(),
        }

    def _metrics(self) -> dict[str, Any]:
        return {
            "train_loss": self.last_train_loss,
            **{f"eval_{k}": v for k, v in self.last_eval.items()},
            "best_eval_loss": self.best_eval_loss,
            "epoch": self.epoch,
        }

    def save(self, name: str, with_state: bool = True) -> None:
        """Write checkpoint ``out_dir/name`` (rank 0 only); ``with_state`` adds what exact resume needs."""
        if self.dist.is_main:
            state = self._training_state() if with_state else None
            save_checkpoint(
                self.out_dir / name,
                self.model,
                tokenizer=self.tokenizer,
                step=self.step,
                metrics=self._metrics(),
                training_state=state,
            )
        self._barrier()

    def _barrier(self) -> None:
        if self.dist.world_size > 1:
            dist.barrier()

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint this trainer wrote: weights, optimizer, scheduler, RNG, data order."""
        path = Path(path)
        state = load_training_state(path)
        if state["world_size"] != self.dist.world_size:
            raise ValueError(
                f"checkpoint was trained on {state['world_size']} processes; resuming on "
                f"{self.dist.world_size} would change the data order"
            )
        saved = state["train_config"]
        for knob in ("batch_size", "grad_accum", "seed", "shuffle", "drop_last"):
            if saved[knob] != getattr(self.config, knob):
                raise ValueError(
                    f"{knob} was {saved[knob]} in the checkpoint and is {getattr(self.config, knob)} now; "
                    "resuming would not continue the same data order"
                )
        load_model(self.model, str(path / "model.safetensors"), device=str(self.device))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_eval_loss, self.bad_epochs = state["best_eval_loss"], state["bad_epochs"]
        self.patience_ref = state.get("patience_ref", self.best_eval_loss)  # older runs: min_delta was 0
        self._truncate_log(self.step)

    # ---- logging -----------------------------------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        return self.out_dir / "log.csv"

    def _log(self, row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        new = not self.log_path.exists()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in LOG_FIELDS})

    def _truncate_log(self, step: int) -> None:
        """Drop log rows written after the checkpoint we resume from, so the log tells one story."""
        if not self.dist.is_main or not self.log_path.exists():
            return
        with self.log_path.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= step]
        self.log_path.unlink()
        for r in rows:
            self._log(r)

    # ---- evaluation --------------------------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Mean loss per token (weighted by the step's ``tokens`` metric, else per batch) and perplexity over
        the evaluation set, summed across processes."""
        if self.eval_data is None:
            return {}
        c = self.config
        sampler = DistributedSampler(self.eval_data, self.dist.world_size, self.dist.rank, shuffle=False)
        loader = self._loader(self.eval_data, sampler, c.eval_batch_size or c.batch_size, False, c.seed)
        was_training = self.model.training
        self.model.eval()
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)  # [sum loss * weight, sum weight]
        for batch in islice(loader, c.max_eval_batches):
            with self._autocast():
                loss, metrics = self.step_fn(self.model, self._to_device(batch))
            weight = metrics.get("tokens", 1.0)
            totals += torch.tensor([loss.item() * weight, weight], dtype=torch.float64, device=self.device)
        self.model.train(was_training)
        if self.dist.world_size > 1:
            dist.all_reduce(totals)
        mean = (totals[0] / totals[1].clamp(min=1e-12)).item()
        return {"loss": mean, "ppl": math.exp(min(mean, 700.0))}

    # ---- the loop ----------------------------------------------------------------------------------------

    def _update(self, batches: Iterator[Any], group: int) -> tuple[float, float, float, float]:
        """One optimizer step over the next ``group`` micro-batches: (mean loss, tokens, gradient norm, lr).

        A subclass with another update rule overrides this (a GAN's critic and generator steps,
        `museforge.families.musegan.gan`); the loop around it, checkpoints and exact resume stay the same.
        """
        loss_sum, tokens = 0.0, 0.0
        for i in range(group):
            batch = self._to_device(next(batches))
            sync = i == group - 1 or self.dist.world_size == 1
            ctx = nullcontext() if sync else self.wrapped.no_sync()
            with ctx:
                with self._autocast():
                    loss, metrics = self.step_fn(self.wrapped, batch)
                (loss / group).backward()
            loss_sum += loss.item()
            tokens += metrics.get("tokens", 0.0)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip or math.inf)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss_sum / group, tokens, float(grad_norm), lr

    def fit(self, resume: bool | str | Path = False, until_step: int | None = None) -> TrainResult:
        """Train until ``epochs`` or ``max_steps`` or early stopping.

        ``resume=True`` continues from ``out_dir/last`` (a path picks another checkpoint); ``until_step``
        pauses after that step with a resumable ``last`` checkpoint, to train in chunks of limited time.
        """
        c = self.config
        if resume:
            self.resume(self.out_dir / "last" if resume is True else resume)
        else:
            seed_everything(c.seed + self.dist.rank)
        stop_at = self.total_steps if until_step is None else min(until_step, self.total_steps)
        stopped_early = False
        progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss {task.fields[loss]:.4f}"),
            TextColumn("{task.fields[tps]:.0f} tok/s"),
            TimeElapsedColumn(),
            disable=not (c.progress and self.dist.is_main),
        )
        task = progress.add_task(
            "train", total=self.total_steps, completed=self.step, epoch=self.epoch, loss=float("nan"), tps=0.0
        )
        self.wrapped.train()
        # A step_fn whose loss follows a schedule (e.g. a VAE's KL weight) learns the optimizer step here.
        on_step: Callable[[int], None] | None = getattr(self.step_fn, "on_step", None)
        start = time.perf_counter()
        window_tokens, window_start, window_losses = 0.0, time.perf_counter(), []
        with progress:
            while self.epoch < c.epochs and self.step < stop_at:
                self.sampler.set_position(self.epoch, self.batch_in_epoch * c.batch_size)
                loader = self._loader(
                    self.train_data, self.sampler, c.batch_size, c.drop_last, c.seed + self.epoch
                )
                batches = iter(loader)
                while self.batch_in_epoch < self.batches_per_epoch and self.step < stop_at:
                    group = min(c.grad_accum, self.batches_per_epoch - self.batch_in_epoch)
                    if on_step is not None:
                        on_step(self.step)
                    self.last_train_loss, tokens, grad_norm, lr = self._update(batches, group)
                    self.step += 1
                    self.batch_in_epoch += group
                    window_losses.append(self.last_train_loss)
                    window_tokens += tokens * self.dist.world_size
                    if self.step % c.log_every == 0 or self.step == stop_at:
                        now = time.perf_counter()
                        tps = window_tokens / max(now - window_start, 1e-9)
                        mean_loss = sum(window_losses) / len(window_losses)
                        self._log(
                            {
                                "step": self.step,
                                "epoch": self.epoch,
                                "split": "train",
                                "loss": mean_loss,
                                "lr": lr,
                                "grad_norm": float(grad_norm),
                                "tokens_per_s": round(tps, 1),
                                "elapsed_s": round(now - start, 3),
                            }
                        )
                        progress.update(task, completed=self.step, loss=mean_loss, tps=tps, epoch=self.epoch)
                        window_tokens, window_start, window_losses = 0.0, now, []
                    if self.step % c.checkpoint_every == 0 and self.step < stop_at:
                        self.save("last")
                if self.batch_in_epoch >= self.batches_per_epoch:
                    stopped_early = self._end_epoch(start)
                    if stopped_early:
                        break
                    if self.step < stop_at and self.step % c.checkpoint_every:
                        self.save("last")  # a run that dies in the next epoch loses that epoch at most
                    window_start = time.perf_counter()  # evaluation time is not training throughput
            if self.step == self.total_steps and self.batch_in_epoch > 0:
                # max_steps ended the run inside an epoch: evaluate these final weights too, so the run's
                # best checkpoint (what gets shipped) is never older than its last epoch boundary.
                self._evaluate_and_keep_best(start, epoch=self.epoch)
            self.save("last")
        return TrainResult(
            self.step, self.epoch, self.best_eval_loss, self.last_eval, stopped_early, self.out_dir
        )

    def _end_epoch(self, start: float) -> bool:
        """Evaluate, keep the best checkpoint, count epochs without improvement; True means stop."""
        self.epoch += 1
        self.batch_in_epoch = 0
        improved = self._evaluate_and_keep_best(start, epoch=self.epoch - 1)
        if improved is None or improved:
            return False
        self.bad_epochs += 1
        return self.config.patience is not None and self.bad_epochs >= self.config.patience

    def _evaluate_and_keep_best(self, start: float, epoch: int) -> bool | None:
        """Evaluate and write ``best`` if the loss improved at all; True when it counts as a gain for the
        patience (`counts_as_gain`), None when there is no evaluation data."""
        self.last_eval = self.evaluate()
        if not self.last_eval:
            return None
        loss = self.last_eval["loss"]
        self._log(
            {
                "step": self.step,
                "epoch": epoch,
                "split": "eval",
                "loss": loss,
                "ppl": self.last_eval.get("ppl", ""),
                "elapsed_s": round(time.perf_counter() - start, 3),
            }
        )
        if self.best_eval_loss is None or loss < self.best_eval_loss:
            self.best_eval_loss = loss
            self.save("best", with_state=False)
        if counts_as_gain(loss, self.patience_ref, self.config.min_delta):
            self.patience_ref, self.bad_epochs = loss, 0
            return True
        return False
