"""``fit``: train the two-stream model on feature arrays, with checkpoints, resume and MLflow.

Reusable API (tuning, ablation)::

    from bigfive.training import fit, FitResult
    result = fit(params, features_dir="data/features", output_dir="models/trial-3",
                 experiment="bigfive-tune", run_name="trial-3", tags={"trial": "3"}, nested=True,
                 register=False, on_epoch=lambda epoch, metrics: ...)
    result.best_val_mean_accuracy, result.history, result.run_id, result.best_checkpoint

The keyword options are :class:`FitOptions`. ``fit`` reads as a short story: :func:`_setup` builds
everything an epoch needs (a :class:`Session`), :func:`_run_epochs` trains and validates, and
:func:`_finish` writes the analysis and run record and registers the model. MLflow lives in
:mod:`~bigfive.training.run_tracker`, the registry and champion alias in
:mod:`~bigfive.training.registry`, RNG state in :mod:`~bigfive.training.rng`.

- ``on_epoch(epoch, metrics)`` runs after each validation (epoch is 1-based; metrics hold
  ``val_mean_accuracy``, ``val_loss``, ``train_loss``, ``val_acc_<trait>``, ``lr``, timings). An
  exception from it (``optuna.TrialPruned``) propagates after ``last.pt`` is written and the MLflow
  run is ended as KILLED (FAILED for other errors).
- ``nested=True`` inside an active MLflow run starts a child run (an active run always gets one).
- ``register=True`` logs the best checkpoint as pyfunc ``model``, registers it as
  ``tracking.registered_model`` and moves the champion alias only if it is better on the same features.
- ``resume=True`` continues from ``<output_dir>/last.pt`` (same MLflow run) and reproduces the
  uninterrupted run exactly on CPU; ``init_from`` warm-starts from a checkpoint path or MLflow URI.

Determinism: the model is initialised from ``train.seed``; shuffling uses ``seed + epoch``;
augmentation draws per clip from ``(seed, epoch, row)``; dropout uses the global torch RNG, whose
state (with numpy's and Python's) is saved in every checkpoint. On CPU
``torch.use_deterministic_algorithms(True)`` is on while ``fit`` runs (``train.deterministic``); on
CUDA it only warns where a kernel has no deterministic version.

GPU path: a training step never waits for the GPU (no per-step synchronisation or ``.item()``);
the epoch synchronises once before its clock stops, so ``compute_s`` is the GPU's time, not the
launch queue's. Batches come from ``train.num_workers`` DataLoader workers over the memmaps, pinned
and copied asynchronously when the device is CUDA.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.deterministic
from torch import nn

from bigfive import ALL_LABELS, __version__
from bigfive.config import Params, to_dict
from bigfive.config.train import TrainConfig
from bigfive.models import build_model, checkpoint_state, load_checkpoint
from bigfive.models.infer import infer
from bigfive.training import distributed as dist
from bigfive.training.analysis import RunContext, analyse, to_markdown, write_report
from bigfive.training.callbacks import (
    Callback,
    CallbackList,
    Checkpointer,
    EarlyStopping,
    EpochTiming,
    LambdaCallback,
    LRMonitor,
    MetricTracker,
    MLflowLogger,
    ProgressLogger,
    StreamFreeze,
    Timer,
    TrainState,
)
from bigfive.training.data import ClipDataset, EpochSampler, TrainData, check_labels, from_features_dir, make_loader
from bigfive.training.rng import rng_state, seed_everything, set_rng_state
from bigfive.training.run_tracker import RunTracker, features_tags, run_tags
from bigfive.training.schedule import warmup_cosine
from bigfive.training.tracking import default_run_name
from bigfive.utils.device import autocast, resolve_device
from bigfive.utils.io import write_json
from bigfive.utils.progress import progress

log = logging.getLogger("bigfive.training")

MONITOR = "val_mean_accuracy"


@dataclass
class FitOptions:
    """What a caller of ``fit`` may choose besides ``params`` (all keyword arguments of ``fit``)."""

    features_dir: str | Path | None = None  # default: preprocess.features_dir
    output_dir: str | Path | None = None  # default: train.models_dir
    experiment: str | None = None  # default: tracking.experiment (or the active parent run's)
    run_name: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    nested: bool = False
    register: bool = True
    on_epoch: Callable[[int, dict], None] | None = None
    resume: bool = False
    init_from: str | None = None
    data: TrainData | None = None  # replaces features_dir (direct entry)
    callbacks: list[Callback] = field(default_factory=list)  # run after the built-in ones, before on_epoch


@dataclass
class FitResult:
    best_val_mean_accuracy: float
    best_epoch: int
    history: list[dict[str, float]]
    run_id: str | None
    best_checkpoint: Path
    last_checkpoint: Path
    analysis: dict[str, Any]
    output_dir: Path
    stopped_early: bool = False
    model_version: str | None = None
    champion_moved: bool = False
    ranks: dict[str, Any] = field(default_factory=dict)
    epochs_to_interaction: int | None = None  # first epoch at train.interaction_threshold (None: never)


@dataclass
class Session:
    """Everything one ``fit`` builds before its first epoch."""

    params: Params
    data: TrainData
    out: Path
    info: dist.DistInfo
    device: torch.device
    tracker: RunTracker
    model: nn.Module  # the plain module; train_net/eval_net may wrap it (DDP, compile)
    train_net: nn.Module
    eval_net: nn.Module
    train_ds: ClipDataset
    train_loader: Any
    val_loader: Any
    state: TrainState
    callbacks: CallbackList | None = None
    features: dict[str, str] = field(default_factory=dict)  # features_hash and its source
    run_id: str | None = None
    ranks: dict[str, Any] = field(default_factory=dict)


def first_epoch_reaching(history: list[dict[str, float]], key: str, threshold: float) -> int | None:
    """The first epoch whose ``key`` is at least ``threshold``, or None if no epoch reaches it."""
    return next((int(row["epoch"]) for row in history if row.get(key, -math.inf) >= threshold), None)


# ------------------------------------------------------------------------------------- model setup
def make_optimizer(model: nn.Module, lr: float, weight_decay: float, stream_lr_mult: float = 1.0) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and norm scales (1-D tensors), as usual for transformers.

    The two streams' parameters learn at ``stream_lr_mult`` x ``lr``, fusion and head at ``lr``.
    """
    streams = {id(p) for name in ("static", "dynamic") if getattr(model, name, None) is not None
               for p in getattr(model, name).parameters()}
    groups = []
    for in_stream, scale in ((True, stream_lr_mult), (False, 1.0)):
        trainable = [p for p in model.parameters() if p.requires_grad and (id(p) in streams) == in_stream]
        groups += [{"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay, "lr": lr * scale},
                   {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0, "lr": lr * scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr)


def warm_start(model: nn.Module, source: str) -> dict[str, int]:
    """Load the shape-compatible weights of a checkpoint path or MLflow model URI into ``model``."""
    from bigfive.inference.loader import load_model_checkpoint

    ckpt = load_model_checkpoint(source)
    state = {k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()}
    own = model.state_dict()
    fits = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not fits:
        raise ValueError(f"--init-from {source}: no weight fits the configured model (different architecture?)")
    model.load_state_dict(fits, strict=False)
    report = {"loaded": len(fits), "skipped": len(state) - len(fits), "missing": len(own) - len(fits)}
    log.info("warm start from %s: %d tensors loaded, %d skipped (shape or name), %d left at init",
             source, report["loaded"], report["skipped"], report["missing"])
    return report


def _set_deterministic(mode: bool, *, warn_only: bool, compiled: bool) -> None:
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if compiled or setter is None:
        torch.use_deterministic_algorithms(mode, warn_only=warn_only)
    else:
        # the public call also imports torch._inductor (seconds) just to set a flag only compile reads
        setter(mode, warn_only=warn_only)


@contextlib.contextmanager
def deterministic(tc: TrainConfig, device: torch.device) -> Iterator[None]:
    """``train.deterministic`` while the block runs, restoring the previous settings afterwards.

    Deterministic mode also makes torch fill every new uninitialised tensor with NaN, a debugging
    aid that no kernel here needs (they write before they read): it was 6-15 % of a CPU training
    step and nearly all of the mode's cost (results/train_throughput.json), so it is switched off.
    """
    fill = torch.utils.deterministic
    previous, previous_fill = torch.are_deterministic_algorithms_enabled(), fill.fill_uninitialized_memory
    if tc.deterministic and not previous:
        # CUDA kernels may lack deterministic versions: warn there instead of failing
        _set_deterministic(True, warn_only=device.type == "cuda", compiled=tc.compile)
        fill.fill_uninitialized_memory = False
    try:
        yield
    finally:
        fill.fill_uninitialized_memory = previous_fill
        if torch.are_deterministic_algorithms_enabled() != previous:
            _set_deterministic(previous, warn_only=False, compiled=tc.compile)


def loss_fn(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return F.l1_loss if kind == "l1" else F.mse_loss


# --------------------------------------------------------------------------------- epoch functions
def train_step(net: nn.Module, static: torch.Tensor, dynamic: torch.Tensor, y: torch.Tensor, optimizer, scheduler,
               criterion, params: list[torch.Tensor], grad_clip: float, device: torch.device) -> torch.Tensor:
    """One optimizer step on a batch already on ``device``; returns the detached loss (nothing waits for it).

    The loop's step, and the model-only reference of ``benchmarks/train_throughput.py``.
    """
    with autocast(device):
        pred = net(static, dynamic)
    loss = criterion(pred.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    scheduler.step()
    return loss.detach()


def train_epoch(net: nn.Module, loader, state: TrainState, callbacks: Callback, criterion, grad_clip: float,
                device: torch.device, info: dist.DistInfo) -> tuple[float, list[int]]:
    """One pass over the training loader; returns (mean loss over ranks, rows this rank saw)."""
    net.train()
    timing = state.timing
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = 0
    rows: list[int] = []
    params = [p for p in state.model.parameters() if p.requires_grad]
    bar = progress(total=len(loader.sampler), desc=f"epoch {state.epoch}/{state.epochs}", leave=False,
                   disable=not info.is_main)
    it = iter(loader)
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        try:
            static, dynamic, y, idx = next(it)
        except StopIteration:
            break
        timing.data_s += time.perf_counter() - t0
        static, dynamic = static.to(device, non_blocking=True), dynamic.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        loss = train_step(net, static, dynamic, y, state.optimizer, state.scheduler, criterion, params, grad_clip,
                          device)
        loss_sum += loss.double() * len(y)  # stays on the device: no per-step wait
        seen += len(y)
        rows.extend(int(i) for i in idx)
        state.step += 1
        state.batch_loss = loss
        callbacks.on_batch_end(state)
        bar.update(len(y))
    bar.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # once per epoch, so compute time is the GPU's, not the launch queue's
    timing.compute_s += time.perf_counter() - start - timing.data_s
    totals = dist.all_reduce_sum(torch.stack([loss_sum.cpu(), torch.tensor(float(seen), dtype=torch.float64)]), info)
    timing.samples = int(totals[1].item())
    return float(totals[0] / max(totals[1], 1)), rows


def validate(net: nn.Module, loader, device: torch.device, outputs: int, loss_kind: str,
             info: dist.DistInfo) -> dict[str, float]:
    """Validation loss, mean accuracy (1 - MAE averaged over traits) and per-trait accuracy, over all ranks."""
    net.eval()
    abs_sum = torch.zeros(outputs, dtype=torch.float64)
    sq_sum = torch.zeros(outputs, dtype=torch.float64)
    n = 0
    for static, dynamic, y, _ in loader:
        pred, _ = infer(net, static, dynamic, device)
        err = pred.cpu().double() - y.double()
        abs_sum += err.abs().sum(0)
        sq_sum += (err ** 2).sum(0)
        n += len(y)
    totals = dist.all_reduce_sum(torch.cat([abs_sum, sq_sum, torch.tensor([float(n)], dtype=torch.float64)]), info)
    n_all = max(float(totals[-1]), 1.0)
    mae = totals[:outputs] / n_all
    mse = totals[outputs:2 * outputs] / n_all
    metrics = {"val_loss": float((mae if loss_kind == "l1" else mse).mean()), MONITOR: float((1 - mae).mean())}
    for name, m in zip(ALL_LABELS[:outputs], mae.tolist()):
        metrics[f"val_acc_{name}"] = 1.0 - m
    return metrics


# ------------------------------------------------------------------------------------------------ fit
def fit(params: Params, **options: Any) -> FitResult:
    """Train ``params.model`` on the train split of the features (early stopping on its val split).

    ``options`` are the fields of :class:`FitOptions`.
    """
    opts = FitOptions(**options)
    tc = params.train
    data = opts.data or from_features_dir(opts.features_dir or params.preprocess.features_dir,
                                          to_dict(params.preprocess))
    check_labels(data.train, params.model.outputs)
    check_labels(data.val, params.model.outputs)
    info = dist.setup(tc.device)
    device = resolve_device(tc.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    tracker = RunTracker(params, params.tracking.enabled and info.is_main)
    try:
        with deterministic(tc, device):
            session = _setup(params, data, opts, info, device, tracker)
            _run_epochs(session)
            return _finish(session, opts.register)
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) or type(err).__name__ == "TrialPruned" else "FAILED"
        try:
            tracker.end(status)
        except Exception as end_err:  # never hide the original error behind a tracking one
            log.warning("could not end the MLflow run: %s", end_err)
        raise
    finally:
        dist.teardown(info)


def _setup(params: Params, data: TrainData, opts: FitOptions, info: dist.DistInfo, device: torch.device,
           tracker: RunTracker) -> Session:
    """The model (fresh, resumed or warm-started), loaders, wrappers, the MLflow run and the callbacks."""
    tc = params.train
    out = Path(opts.output_dir or tc.models_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
    seed_everything(tc.seed)
    model = build_model(params.model, data.train.frames, data.train.flow_channels)
    last_path = out / "last.pt"
    resume_ckpt = load_checkpoint(last_path) if opts.resume and last_path.is_file() else None
    if opts.resume and resume_ckpt is None:
        log.warning("--resume: %s not found; starting from scratch", last_path)
    if opts.init_from and resume_ckpt is None:
        warm_start(model, opts.init_from)
    model.to(device)
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay, tc.stream_lr_mult)
    train_ds, train_loader, val_loader, steps_per_epoch = _loaders(tc, data, params.model.outputs, info, device)
    scheduler = warmup_cosine(optimizer, tc.warmup_epochs * steps_per_epoch, tc.epochs * steps_per_epoch)
    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler, output_dir=out, epochs=tc.epochs,
                       monitor=MONITOR, is_main=info.is_main)
    run_id = None
    if resume_ckpt is not None:
        _restore(resume_ckpt, model, optimizer, scheduler, state, info, last_path)
        run_id = str(resume_ckpt.get("run_id") or "") or None
    else:
        torch.manual_seed(tc.seed + info.rank)  # per-rank dropout streams; the weights are rank 0's (DDP)
    train_net, eval_net = _wrap(model, info, device, tc.compile)
    s = Session(params, data, out, info, device, tracker, model, train_net, eval_net, train_ds, train_loader,
                val_loader, state, features=features_tags(data))
    tags = run_tags(params, data, s.features, opts.init_from, opts.tags)
    s.run_id = tracker.start(experiment=opts.experiment, run_name=opts.run_name or default_run_name(params),
                             tags=tags, nested=opts.nested, resume_run_id=run_id)
    tracker.log_dataset(data, s.features["features_hash"])
    state.checkpoint = _checkpoint_builder(s)
    s.callbacks = CallbackList([StreamFreeze(tc.freeze_streams_epochs), Timer(), LRMonitor(),
                                MetricTracker(tc.min_delta), EarlyStopping(tc.patience), Checkpointer(),
                                MLflowLogger(tracker.run_id), ProgressLogger(), *opts.callbacks,
                                *([LambdaCallback(opts.on_epoch)] if opts.on_epoch else [])])
    return s


def _loaders(tc: TrainConfig, data: TrainData, outputs: int, info: dist.DistInfo, device: torch.device):
    """(train dataset, train loader, val loader, optimizer steps per epoch) for this rank."""
    train_ds = ClipDataset(data.train, data.train_indices, outputs, tc.hflip, tc.temporal_shuffle, tc.seed)
    val_ds = ClipDataset(data.val, data.val_indices, outputs)
    # training shards are cut to equal length so every rank runs the same number of DDP steps
    n_even = len(train_ds) - len(train_ds) % info.world
    train_sampler = EpochSampler(n_even, shuffle=True, seed=tc.seed, rank=info.rank, world=info.world)
    val_sampler = EpochSampler(len(val_ds), shuffle=False, rank=info.rank, world=info.world)
    pin = device.type == "cuda"  # pinned host memory lets the copy to the GPU run asynchronously
    train_loader = make_loader(train_ds, train_sampler, tc.batch_size, tc.num_workers, pin)
    val_loader = make_loader(val_ds, val_sampler, 2 * tc.batch_size, tc.num_workers, pin)
    return train_ds, train_loader, val_loader, max(1, math.ceil(len(train_sampler) / tc.batch_size))


def _wrap(model: nn.Module, info: dist.DistInfo, device: torch.device, compile: bool) -> tuple[nn.Module, nn.Module]:
    """(the network training steps call, the one validation calls): DDP and/or ``torch.compile``."""
    train_net: nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if compile:
        train_net = torch.compile(train_net)
    if not info.enabled:
        return train_net, train_net
    return train_net, torch.compile(model) if compile else model  # validation needs no gradient sync


def _checkpoint_builder(s: Session) -> Callable[[TrainState], dict[str, Any]]:
    """The function the Checkpointer calls: weights, optimizer, schedule, RNG states and the run's records."""
    labels = list(ALL_LABELS[:s.params.model.outputs])
    extra = {"preprocess": s.data.meta, "labels": labels, "params": to_dict(s.params), "run_id": s.run_id or "",
             "bigfive_version": __version__, "world_size": s.info.world}

    def build(state: TrainState) -> dict[str, Any]:
        rngs = dist.all_gather(rng_state(), s.info)
        return {**checkpoint_state(s.model), **extra, "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(), "epoch": state.epoch, "step": state.step,
                "rng": rngs[0], "rng_ranks": rngs, "history": state.history, "best_metric": state.best_metric,
                "best_epoch": state.best_epoch, "stopped": state.stop, "stop_reason": state.stop_reason}

    return build


def _run_epochs(s: Session) -> None:
    """Train and validate epoch by epoch until ``train.epochs`` or a callback stops the run."""
    tc, state, cbs = s.params.train, s.state, s.callbacks
    criterion = loss_fn(tc.loss)
    s.ranks = {"world": s.info.world}
    cbs.on_train_begin(state)
    start_epoch = state.epoch
    if state.stop:
        log.info("%s: the run already stopped (%s)", s.out / "last.pt", state.stop_reason)
    for epoch in range(start_epoch + 1, tc.epochs + 1):
        if state.stop:
            break
        state.epoch, state.metrics, state.timing, state.improved = epoch, {}, EpochTiming(), False
        s.train_loader.sampler.set_epoch(epoch)
        s.train_ds.set_epoch(epoch)
        s.train_loader.generator.manual_seed(tc.seed * 1000 + epoch)  # worker seeds: same after a resume
        cbs.on_epoch_begin(state)
        train_loss, rows = train_epoch(s.train_net, s.train_loader, state, cbs, criterion, tc.grad_clip,
                                       s.device, s.info)
        if epoch == start_epoch + 1:
            s.ranks.update(_rank_report(rows, s.info))
        t0 = time.perf_counter()
        dist.broadcast_buffers(s.model, s.info)
        val = validate(s.eval_net, s.val_loader, s.device, s.params.model.outputs, tc.loss, s.info)
        state.timing.eval_s = time.perf_counter() - t0
        state.metrics.update({"train_loss": train_loss, **val})
        cbs.on_epoch_end(state)
    cbs.on_train_end(state)


def _finish(s: Session, register: bool) -> FitResult:
    """The result, and on the main rank the analysis, run record and registration; ends the MLflow run."""
    tc, state = s.params.train, s.state
    ctx = RunContext(device=str(s.device), num_workers=tc.num_workers, batch_size=tc.batch_size,
                     compile=tc.compile, world_size=s.info.world, train_clips=s.data.n_train, val_clips=s.data.n_val)
    result = FitResult(best_val_mean_accuracy=state.best_metric, best_epoch=state.best_epoch,
                       history=state.history, run_id=s.run_id, best_checkpoint=s.out / "best.pt",
                       last_checkpoint=s.out / "last.pt", analysis=analyse(state.history, ctx), output_dir=s.out,
                       stopped_early=state.stop, ranks=s.ranks,
                       epochs_to_interaction=first_epoch_reaching(state.history, f"val_acc_{tc.interaction_trait}",
                                                                  tc.interaction_threshold))
    if s.info.is_main:
        _record(s, result, register)
    dist.barrier(s.info)
    s.tracker.end("FINISHED")
    return result


def _record(s: Session, result: FitResult, register: bool) -> None:
    """Main rank: analysis files, the run's MLflow outcome, registration, then ``run.json``."""
    paths = write_report(result.analysis, s.out)
    print(to_markdown(result.analysis))
    s.tracker.log_outcome(result.analysis, len(result.history), result.epochs_to_interaction,
                          [*paths, s.out / "history.json"])
    run_info: dict[str, Any] = {"run_id": result.run_id, "experiment": s.tracker.experiment,
                                "tracking_uri": s.tracker.uri, "best_val_mean_accuracy": result.best_val_mean_accuracy,
                                "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                                "stopped_early": result.stopped_early, "registered_model": None,
                                "model_version": None, "champion_moved": False, "champion_version": None,
                                "ranks": result.ranks, "epochs_to_interaction": result.epochs_to_interaction}
    if register and s.tracker.run_id is not None:
        run_info.update(_register(s, result))
        result.model_version, result.champion_moved = run_info["model_version"], run_info["champion_moved"]
    write_json(s.out / "run.json", run_info)


def _register(s: Session, result: FitResult) -> dict[str, Any]:
    """Register the best checkpoint; the alias moves only over a holder trained on the same features."""
    from bigfive.training.registry import features_fingerprint, register_best

    row = int(s.data.val_indices[0])
    example = (np.asarray(s.data.val.static[row:row + 1]), np.asarray(s.data.val.dynamic[row:row + 1]))
    tracking = s.params.tracking
    return register_best(load_checkpoint(result.best_checkpoint), example, name=tracking.registered_model,
                         alias=tracking.champion_alias, value=result.best_val_mean_accuracy,
                         fingerprint=features_fingerprint(s.features["features_hash"], s.data.meta))


def _restore(ckpt: dict[str, Any], model: nn.Module, optimizer, scheduler, state: TrainState,
             info: dist.DistInfo, path: Path) -> None:
    model.load_state_dict({k.removeprefix("_orig_mod."): v for k, v in ckpt["model"].items()})
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    rngs = ckpt.get("rng_ranks") or [ckpt["rng"]]
    if len(rngs) != info.world:
        log.warning("%s was written by %d processes, resuming with %d: dropout streams differ from an "
                    "uninterrupted run", path, len(rngs), info.world)
    set_rng_state(rngs[info.rank] if info.rank < len(rngs) else ckpt["rng"])
    state.epoch, state.step = int(ckpt["epoch"]), int(ckpt.get("step", 0))
    state.history = list(ckpt.get("history") or [])
    state.best_metric = float(ckpt.get("best_metric", -math.inf))
    state.best_epoch = int(ckpt.get("best_epoch", 0))
    state.stop = bool(ckpt.get("stopped", False))
    state.stop_reason = str(ckpt.get("stop_reason", ""))
    if ckpt.get("params", {}).get("model") not in (None, to_dict(model.config)):
        log.warning("%s: model config differs from params.yaml; resuming the checkpoint's weights anyway", path)
    log.info("resuming from %s after epoch %d (best %s %.4f at epoch %d)", path, state.epoch, MONITOR,
             state.best_metric, state.best_epoch)


def _rank_report(rows: list[int], info: dist.DistInfo) -> dict[str, Any]:
    """Per-rank clip counts and overlap of the first epoch: evidence that ranks saw different data."""
    gathered = dist.all_gather(sorted(rows), info)
    overlap = len(set.intersection(*(set(r) for r in gathered))) if len(gathered) > 1 else 0
    report = {"samples_per_rank": [len(r) for r in gathered],
              "rows_sha_per_rank": [hashlib.sha256(str(r).encode()).hexdigest()[:12] for r in gathered],
              "overlap": overlap}
    if info.enabled:
        log.info("rank %d: %d clips this epoch (all ranks: %s, overlap %d)", info.rank, len(rows),
                 report["samples_per_rank"], overlap)
    return report
