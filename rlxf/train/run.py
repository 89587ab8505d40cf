"""One training run's shared machinery, used by every recipe's loop.

A loop reads::

    run = Run(output_dir, model, train_section, num_examples=len(data))
    for batch in run.steps():                 # global batch of example indices
        for micro in run.micro_batches(batch):
            loss = ...; loss.backward()       # loss already divided by the global batch size
        run.end_step(loss_total, metrics)     # clip, step, schedule, log, checkpoint
    run.finish()

Resuming is automatic: if ``output_dir/checkpoints`` holds a checkpoint, the run
continues from it with the same weights, optimizer, schedule, RNG and data position.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from rlxf.config import ConfigError, TrainSection
from rlxf.models.state import trainable_state
from rlxf.parallel import distributed
from rlxf.train import checkpoint
from rlxf.train.batches import batch_for_step, micro_batches, total_steps
from rlxf.train.data_parallel import TrainingForward
from rlxf.train.metrics import MetricsLog
from rlxf.train.profiling import StepProfiler

log = logging.getLogger(__name__)

PENDING_CONFIG = ".config.pending.yaml"
"""The changed config of a run continued with train.resume=force, until its first step."""


class NonFiniteLoss(RuntimeError):
    """A NaN/Inf loss or gradient; the step is stopped before the weights change."""


def adamw(params: list[torch.nn.Parameter], **settings) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where torch has one for these tensors (10x faster on CPU)."""
    try:
        return torch.optim.AdamW(params, fused=True, **settings)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, **settings)


def lr_lambda(kind: str, warmup: int, total: int):
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def _threads_per_rank() -> int:
    """Cores divided among the ranks on this machine (0: torch's own default, one process)."""
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (os.cpu_count() or 1) // local_ranks) if local_ranks > 1 else 0


class MetricSums:
    """Sums of per-example metrics over the micro-batches of one step."""

    def __init__(self):
        self.sums: dict[str, float] = defaultdict(float)
        self.counts: dict[str, int] = defaultdict(int)

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for name, values in metrics.items():
            values = values.detach().float().reshape(-1)
            self.sums[name] += float(values.sum())
            self.counts[name] += values.numel()

    def means(self) -> dict[str, float]:
        return {name: self.sums[name] / max(1, self.counts[name]) for name in self.sums}


def export_pretrained(model: nn.Module, tokenizer, folder: Path) -> None:
    """The model as ``from_pretrained`` reads it: a LoRA model as its adapter, a policy with a
    critic as the policy; with its tokenizer when the run has one."""
    model = model["policy"] if isinstance(model, nn.ModuleDict) and "policy" in model else model
    if not hasattr(model, "save_pretrained"):
        return
    model.save_pretrained(folder, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)


class Run:
    def __init__(
        self,
        output_dir: str | Path,
        model: nn.Module,
        train: TrainSection,
        *,
        num_examples: int,
        lengths: Sequence[int] | None = None,
        name: str = "train",
        show_progress: bool = True,
        strategy: str = "ddp",
        tokenizer=None,
        progress_keys: Sequence[str] = ("loss",),
    ):
        threads = train.threads or _threads_per_rank()
        if threads:
            torch.set_num_threads(threads)
        if train.batch_size % distributed.world_size():
            raise ValueError(
                f"train.batch_size={train.batch_size} must be a multiple of the {distributed.world_size()} ranks"
            )
        self.dir = Path(output_dir)
        self.model, self.train, self.num_examples, self.lengths = model, train, num_examples, lengths
        self.tokenizer = tokenizer  # written into each checkpoint with the model
        self.progress_keys = tuple(progress_keys)  # what the progress bar shows: the signal that matters
        self.micro_batch_size = train.micro_batch_size or train.batch_size
        self._forward = TrainingForward(model, strategy)  # first: sharding replaces the parameters
        self.params = [p for p in model.parameters() if p.requires_grad]
        self._last_micro_batch = True
        self.optimizer = adamw(self.params, lr=train.lr, weight_decay=train.weight_decay)
        self.total_steps = total_steps(num_examples, train.batch_size, epochs=train.epochs, max_steps=train.max_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lr_lambda(train.scheduler, train.warmup_steps, self.total_steps)
        )
        self.step, self.epoch = 0, 0
        self._batch: list[int] = []
        self._profiler: StepProfiler | None = None
        self._started = time.perf_counter()
        torch.manual_seed(train.seed)
        latest = self._start_from()
        if latest is not None:
            state = checkpoint.load_checkpoint(latest, model, self.optimizer, self.scheduler)
            self._check_same_run(state, latest)
            self.step = state["step"]
            log.info("resumed %s from %s (step %d of %d)", name, latest, self.step, self.total_steps)
        self.resumed_from = self.step
        self.resumed_files = checkpoint.load_side_files(latest) if latest is not None else {}
        self._side_files: dict[str, dict[str, torch.Tensor]] = {}
        self.metrics = MetricsLog(self.dir, resume_step=self.step, enabled=distributed.is_main())
        self.progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=name,
            dynamic_ncols=True,
            disable=not (show_progress and distributed.is_main()),
            mininterval=1.0,
        )

    def _start_from(self) -> Path | None:
        """The checkpoint to resume: output_dir's latest; ``train.resume_from`` only while output_dir
        has none of its own (a restarted run goes on from its own progress, not back to the start)."""
        latest = checkpoint.latest_checkpoint(self.checkpoint_dir)
        if latest is not None and self.train.resume_from:
            log.warning(
                "train.resume_from=%s is not used: %s goes on from its own %s",
                self.train.resume_from,
                self.dir,
                latest.name,
            )
        if latest is not None or not self.train.resume_from:
            return latest
        path = Path(self.train.resume_from).expanduser()
        if not (path / "state.pt").is_file():
            raise ConfigError(f"train.resume_from={path} is not a checkpoint folder (no state.pt)")
        return path

    @property
    def trained_now(self) -> bool:
        """Whether this process trained at all (a finished run run again trains nothing)."""
        return self.step > self.resumed_from

    @property
    def checkpoint_dir(self) -> Path:
        return self.dir / "checkpoints"

    def _data_order(self) -> dict[str, Any]:
        """What fixes the order of examples; a resumed run must match it to be exact."""
        return {
            "num_examples": self.num_examples,
            "batch_size": self.train.batch_size,
            "seed": self.train.seed,
            "shuffle": self.train.shuffle,
            "length_grouped": self.lengths is not None,
        }

    def _check_same_run(self, state: dict[str, Any], path: Path) -> None:
        saved = state.get("data_order", {})
        changed = {k: (saved[k], v) for k, v in self._data_order().items() if k in saved and saved[k] != v}
        if changed:
            details = ", ".join(f"{k}: {old} -> {new}" for k, (old, new) in changed.items())
            raise RuntimeError(
                f"{path} belongs to a run with other data or batching ({details}); "
                f"use a new output_dir or delete {self.checkpoint_dir}"
            )

    # ---- the loop ----
    def steps(self) -> Iterator[list[int]]:
        """Global batches (example indices) of the remaining steps, in order."""
        while self.step < self.total_steps:
            self.epoch, self._batch = self._epoch_and_batch(self.step)
            if self.step + 1 == self.train.profile_step and distributed.is_main():
                self._profiler = StepProfiler()
            self._step_started = time.perf_counter()
            yield self._batch

    def batch_at(self, step: int) -> list[int] | None:
        """The global batch of a later step (for work started ahead of it); None past the end."""
        return self._epoch_and_batch(step)[1] if step < self.total_steps else None

    def _epoch_and_batch(self, step: int) -> tuple[int, list[int]]:
        epoch, _, batch = batch_for_step(
            step,
            self.num_examples,
            self.train.batch_size,
            seed=self.train.seed,
            lengths=self.lengths,
            shuffle=self.train.shuffle,
        )
        return epoch, batch

    def micro_batches(self, batch: list[int]) -> Iterator[list[int]]:
        """This rank's share of the batch, in micro-batches for gradient accumulation."""
        return self.accumulate(micro_batches(distributed.shard(batch), self.micro_batch_size))

    def accumulate(self, micro_batches: Sequence[Any]) -> Iterator[Any]:
        """The micro-batches of one update, in order; ranks sum gradients in the last one's backward."""
        for position, micro in enumerate(micro_batches):
            self._last_micro_batch = position == len(micro_batches) - 1
            yield micro
        self._last_micro_batch = True

    def forward(self, compute, *args, **kwargs):
        """``compute(model, *args)``: the training forward pass, through data parallelism when
        there are several ranks (loops call every gradient-carrying forward this way)."""
        return self._forward(compute, *args, sync=self._last_micro_batch, **kwargs)

    @property
    def global_batch_size(self) -> int:
        return len(self._batch)

    def end_step(self, loss: float, metrics: dict[str, float] | None = None, *, tokens: int = 0) -> dict[str, float]:
        """Clip, update, advance the schedule, log, and checkpoint when due.

        ``loss`` and ``tokens`` are this rank's share (summed over ranks here); ``metrics`` are
        this rank's means (averaged over ranks here).
        """
        lr = self.scheduler.get_last_lr()[0]
        loss, tokens = distributed.global_sum(loss), int(distributed.global_sum(tokens))
        metrics = distributed.mean_over_ranks(metrics or {})
        grad_norm = self.apply_gradients(loss)
        self.scheduler.step()
        self.step += 1
        if self.step == self.resumed_from + 1:
            self._adopt_pending_config()
        seconds = time.perf_counter() - self._step_started
        record = {
            "loss": loss,
            **metrics,
            "grad_norm": grad_norm,
            "lr": lr,
            "epoch": self.epoch,
            "step_seconds": seconds,
        }
        if tokens:
            record.update(tokens=tokens, tokens_per_second=tokens / seconds)
        if self.step % self.train.log_every == 0 or self.step == self.total_steps:
            self.metrics.write(self.step, record)
        if self._profiler is not None:
            log.info("profile of step %d: %s", self.step, self._profiler.finish(self.dir / "profile", self.step))
            self._profiler = None
        shown = {key: f"{record[key]:.4g}" for key in self.progress_keys if isinstance(record.get(key), (int, float))}
        self.progress.set_postfix(shown, refresh=False)
        self.progress.update(1)
        if self.train.save_every and self.step % self.train.save_every == 0:
            self.save_checkpoint()
        return record

    def _adopt_pending_config(self) -> None:
        """A run continued with a changed config (train.resume=force) holds the new one aside
        until it trains a step: a run that trains nothing leaves config.yaml as it was."""
        pending = self.dir / PENDING_CONFIG
        if distributed.is_main() and pending.is_file():
            pending.replace(self.dir / "config.yaml")

    def apply_gradients(self, loss: float) -> float:
        """Clip and apply the accumulated gradients (no schedule step, no logging); returns the
        gradient norm. ``end_step`` calls it; loops that update several times per step (PPO
        epochs) call it directly for all but the last update."""
        where = f"step {self.step + 1} (examples {self._batch[:8]}{'...' if len(self._batch) > 8 else ''})"
        if not math.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"{where}: loss is {loss}; the weights were not updated")
        max_norm = self.train.max_grad_norm if self.train.max_grad_norm > 0 else float("inf")
        grad_norm = float(distributed.gathered(torch.nn.utils.clip_grad_norm_(self.params, max_norm)))
        if not math.isfinite(grad_norm):
            self.optimizer.zero_grad(set_to_none=True)
            raise NonFiniteLoss(f"{where}: gradient norm is {grad_norm}; the weights were not updated")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm

    def eval_due(self) -> bool:
        return bool(self.train.eval_every) and self.step % self.train.eval_every == 0 and self.step < self.total_steps

    def log_eval(self, metrics: dict[str, Any]) -> None:
        self.metrics.write(self.step, metrics, split="eval")

    def full_weights(self):
        """Context in which a sharded model's weights are whole on every rank (enter it on all
        ranks together); nothing to do otherwise."""
        return self._forward.full_weights()

    def evaluate(self, evaluation, *args, **kwargs):
        """``evaluation(*args)`` with the model's weights whole (every rank calls it)."""
        with self.full_weights():
            return evaluation(*args, **kwargs)

    def saves_checkpoint_after_this_step(self) -> bool:
        """Whether ``end_step`` of the step in progress writes a checkpoint (``train.save_every``)."""
        return bool(self.train.save_every) and (self.step + 1) % self.train.save_every == 0

    def save_with_checkpoint(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        """Tensors a loop needs to resume exactly, written into the next checkpoint as
        ``side-<name>.safetensors``; a run resumed from it finds them in ``resumed_files[name]``."""
        self._side_files[name] = tensors

    def save_checkpoint(self) -> Path | None:
        """Called on every rank: a sharded model's weights and optimizer state are gathered first."""
        with self.full_weights():
            trainable = trainable_state(self.model)
        exported = self._forward.whole_model()  # a collective when sharded; the model itself otherwise
        optimizer_state = distributed.gathered(self.optimizer.state_dict())
        side_files, self._side_files = self._side_files, {}
        if not distributed.is_main():
            return None
        return checkpoint.save_checkpoint(
            self.checkpoint_dir,
            self.step,
            trainable,
            optimizer_state,
            self.scheduler,
            {"epoch": self.epoch, "data_order": self._data_order()},
            keep=self.train.keep_checkpoints,
            side_files=side_files,
            export=functools.partial(export_pretrained, exported, self.tokenizer),
        )

    def finish(self) -> float:
        """Close logs; afterwards ``run.model`` is the trained model with whole weights (every rank
        calls it). Returns the wall-clock seconds this process spent in the run."""
        if self.train.save_every and self.step > self.resumed_from and self.step % self.train.save_every:
            self.save_checkpoint()
        self.progress.close()
        self.metrics.close()
        self.model = self._forward.whole_model()  # unsharded, for saving (the same model unless sharded)
        return time.perf_counter() - self._started
