"""Small composable training callbacks (the PyTorch counterpart of Keras callbacks).

Each hook receives the shared :class:`TrainState`; a callback reads and adds to
``state.metrics`` (this epoch's numbers) and may set ``state.stop``. They run in list order, on
every rank (decisions stay in sync because metrics are all-reduced); side effects such as files
and MLflow calls happen only where ``state.is_main``. Order used by ``fit``: Timer, LRMonitor,
MetricTracker, EarlyStopping, Checkpointer, MLflowLogger, ProgressLogger, then the caller's
``on_epoch`` (so an exception there, e.g. optuna.TrialPruned, comes after last.pt is written).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bigfive.utils.io import write_json

log = logging.getLogger("bigfive.training")


@dataclass
class EpochTiming:
    """Seconds spent in one epoch, measured by the loop (this rank)."""

    data_s: float = 0.0  # blocked on the next batch
    compute_s: float = 0.0  # the training pass less data_s (on CUDA, synchronised once at the epoch's end)
    eval_s: float = 0.0  # validation
    samples: int = 0  # training clips, summed over ranks


@dataclass
class TrainState:
    model: nn.Module  # the plain module (not the DDP or compile wrapper)
    optimizer: torch.optim.Optimizer
    scheduler: Any
    output_dir: Path
    epochs: int
    monitor: str = "val_mean_accuracy"
    is_main: bool = True
    epoch: int = 0  # 1-based number of the epoch running or just finished
    step: int = 0  # optimizer steps so far
    # the last batch's loss as the 0-d tensor the step returned: a float would wait for the GPU every batch
    batch_loss: torch.Tensor | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float = -math.inf
    best_epoch: int = 0
    improved: bool = False
    stop: bool = False
    stop_reason: str = ""
    timing: EpochTiming = field(default_factory=EpochTiming)
    # builds the checkpoint dict (called on every rank: it may gather per-rank RNG states)
    checkpoint: Callable[[TrainState], dict[str, Any]] | None = None


class Callback:
    """Override any hook; all are no-ops by default."""

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_batch_end(self, state: TrainState) -> None: ...

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: Sequence[Callback]):
        self.callbacks = list(callbacks)

    def on_train_begin(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(state)

    def on_epoch_begin(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(state)

    def on_batch_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_batch_end(state)

    def on_epoch_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(state)

    def on_train_end(self, state: TrainState) -> None:
        for cb in self.callbacks:
            cb.on_train_end(state)


class Timer(Callback):
    """Epoch wall time and its split: data wait, compute, evaluation; train throughput."""

    def on_epoch_begin(self, state: TrainState) -> None:
        self._t0 = time.perf_counter()

    def on_epoch_end(self, state: TrainState) -> None:
        t = state.timing
        epoch_s = time.perf_counter() - self._t0
        step_s = t.data_s + t.compute_s
        state.metrics.update({
            "epoch_time_s": epoch_s,
            "data_wait_s": t.data_s,
            "compute_s": t.compute_s,
            "eval_s": t.eval_s,
            "data_wait_share": t.data_s / step_s if step_s > 0 else 0.0,
            "throughput_clips_s": t.samples / step_s if step_s > 0 else 0.0,
        })


class LRMonitor(Callback):
    """The learning rate at the end of the epoch (the schedule changes it every step)."""

    def on_epoch_end(self, state: TrainState) -> None:
        state.metrics["lr"] = float(state.optimizer.param_groups[0]["lr"])


class MetricTracker(Callback):
    """Appends the epoch's metrics to the history, tracks the best epoch, writes history.json."""

    def __init__(self, min_delta: float = 0.0):
        self.min_delta = min_delta

    def on_epoch_end(self, state: TrainState) -> None:
        value = state.metrics[state.monitor]
        state.improved = value > state.best_metric + self.min_delta or state.best_epoch == 0
        if state.improved:
            state.best_metric, state.best_epoch = float(value), state.epoch
        state.history.append({"epoch": state.epoch, **{k: float(v) for k, v in state.metrics.items()}})
        if state.is_main:
            write_json(state.output_dir / "history.json", state.history)


class EarlyStopping(Callback):
    """Stops when the monitored metric has not improved for ``patience`` epochs (0 = never)."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, state: TrainState) -> None:
        if self.patience and state.epoch - state.best_epoch >= self.patience:
            state.stop = True
            state.stop_reason = (f"early stopping: {state.monitor} has not improved for {self.patience} epochs "
                                 f"(best {state.best_metric:.4f} at epoch {state.best_epoch})")


class Checkpointer(Callback):
    """``last.pt`` every epoch, ``best.pt`` when the monitored metric improved; atomic writes."""

    def on_epoch_end(self, state: TrainState) -> None:
        if state.checkpoint is None:
            return
        ckpt = state.checkpoint(state)  # every rank: the builder may gather across ranks
        if not state.is_main:
            return
        from bigfive.utils.io import atomic_path

        paths = [state.output_dir / "last.pt"] + ([state.output_dir / "best.pt"] if state.improved else [])
        for path in paths:
            with atomic_path(path) as tmp:
                torch.save(ckpt, tmp)


class MLflowLogger(Callback):
    """This epoch's metrics in one ``mlflow.log_metrics`` call, step = epoch (main rank, tracking on)."""

    def __init__(self, run_id: str | None):
        self.run_id = run_id  # None: tracking is off (and mlflow is never imported)

    def on_epoch_end(self, state: TrainState) -> None:
        if not state.is_main or self.run_id is None:
            return
        import mlflow

        metrics = {k: float(v) for k, v in state.metrics.items() if math.isfinite(float(v))}
        metrics["best_val_mean_accuracy"] = state.best_metric
        mlflow.log_metrics(metrics, step=state.epoch, run_id=self.run_id)


class ProgressLogger(Callback):
    """One log line per epoch (the loop shows a per-batch tqdm bar)."""

    def on_epoch_end(self, state: TrainState) -> None:
        if not state.is_main:
            return
        m = state.metrics
        log.info("epoch %d/%d  train_loss %.4f  val_loss %.4f  val_mean_accuracy %.4f%s  lr %.2e  %.1fs "
                 "(data wait %.0f%%, %.0f clips/s)", state.epoch, state.epochs, m.get("train_loss", math.nan),
                 m.get("val_loss", math.nan), m.get(state.monitor, math.nan), " *" if state.improved else "",
                 m.get("lr", math.nan), m.get("epoch_time_s", math.nan), 100 * m.get("data_wait_share", 0.0),
                 m.get("throughput_clips_s", 0.0))
        if state.stop and state.stop_reason:
            log.info("%s", state.stop_reason)


class StreamFreeze(Callback):
    """Train only fusion and head for the first ``epochs`` epochs (streams frozen), then everything.

    Why: a freshly initialised stream already encodes its events (on the sample, a linear probe
    reads each flash from the static tokens and each nod from the dynamic tokens at init), but
    training both streams from the start teaches them to suppress cues that are nuisances for
    their own traits before the fusion has learned to use them (pipelines/ablation/interaction_probe.py).
    """

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_begin(self, state: TrainState) -> None:
        if self.epochs <= 0:
            return
        frozen = state.epoch <= self.epochs
        for name in ("static", "dynamic"):
            stream = getattr(state.model, name, None)
            if stream is not None:
                stream.requires_grad_(not frozen)


class LambdaCallback(Callback):
    """Calls ``fn(epoch, metrics)`` after each validation; exceptions propagate (optuna.TrialPruned)."""

    def __init__(self, fn: Callable[[int, dict[str, float]], None]):
        self.fn = fn

    def on_epoch_end(self, state: TrainState) -> None:
        self.fn(state.epoch, dict(state.metrics))
