"""``fit``: train the two-stream model on feature arrays, with checkpoints, resume and MLflow.

Reusable API (tuning, ablation)::

    from bigfive.training import fit, FitResult
    result = fit(params, features_dir="data/features", output_dir="models/trial-3",
                 experiment="bigfive-tune", run_name="trial-3", tags={"trial": "3"}, nested=True,
                 register=False, on_epoch=lambda epoch, metrics: ...)
    result.best_val_mean_accuracy, result.history, result.run_id, result.best_checkpoint

- ``on_epoch(epoch, metrics)`` runs after each validation (epoch is 1-based; metrics hold
  ``val_mean_accuracy``, ``val_loss``, ``train_loss``, ``val_acc_<trait>``, ``lr``, timings). An
  exception from it (``optuna.TrialPruned``) propagates after ``last.pt`` is written and the MLflow
  run is ended as KILLED (FAILED for other errors).
- ``nested=True`` inside an active MLflow run starts a child run (an active run always gets one).
- ``register=True`` logs the best checkpoint as pyfunc ``model``, registers it as
  ``tracking.registered_model`` and moves the champion alias only if it is better.
- ``resume=True`` continues from ``<output_dir>/last.pt`` (same MLflow run) and reproduces the
  uninterrupted run exactly on CPU; ``init_from`` warm-starts from a checkpoint path or MLflow URI.

Determinism: the model is initialised from ``train.seed``; shuffling uses ``seed + epoch``;
augmentation draws per clip from ``(seed, epoch, row)``; dropout uses the global torch RNG, whose
state (with numpy's and Python's) is saved in every checkpoint. On CPU
``torch.use_deterministic_algorithms(True)`` is on while ``fit`` runs (``train.deterministic``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bigfive import ALL_LABELS, __version__
from bigfive.config import Params, to_dict
from bigfive.models import build_model, checkpoint_state, load_checkpoint
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
from bigfive.training.schedule import warmup_cosine
from bigfive.utils.device import autocast, resolve_device
from bigfive.utils.io import write_json
from bigfive.utils.progress import progress

log = logging.getLogger("bigfive.training")

MONITOR = "val_mean_accuracy"


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


def first_epoch_reaching(history: list[dict[str, float]], key: str, threshold: float) -> int | None:
    """The first epoch whose ``key`` is at least ``threshold``, or None if no epoch reaches it."""
    return next((int(row["epoch"]) for row in history if row.get(key, -math.inf) >= threshold), None)


# ---------------------------------------------------------------------------------------- RNG state
def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain lists/ints (torch.load(weights_only=True) reads them)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 (global state libraries use)
    py_version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": str(name), "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": int(py_version), "state": [int(v) for v in py_state], "gauss_next": py_gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["keys"], dtype=np.uint32), n["pos"],  # noqa: NPY002
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeds the legacy global state libraries use)
    torch.manual_seed(seed)


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
    from bigfive.training.tracking import load_checkpoint_any

    ckpt = load_checkpoint_any(source)
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


def loss_fn(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return F.l1_loss if kind == "l1" else F.mse_loss


# --------------------------------------------------------------------------------- epoch functions
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
    while True:
        t0 = time.perf_counter()
        try:
            static, dynamic, y, idx = next(it)
        except StopIteration:
            break
        t1 = time.perf_counter()
        timing.data_s += t1 - t0
        static, dynamic = static.to(device, non_blocking=True), dynamic.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        with autocast(device):
            pred = net(static, dynamic)
        loss = criterion(pred.float(), y)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        state.optimizer.step()
        state.scheduler.step()
        loss_sum += loss.detach().double() * len(y)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # so compute time is the GPU's, not the launch queue's
        timing.compute_s += time.perf_counter() - t1
        seen += len(y)
        rows.extend(int(i) for i in idx)
        state.step += 1
        state.batch_loss = loss.detach()
        callbacks.on_batch_end(state)
        bar.update(len(y))
    bar.close()
    totals = dist.all_reduce_sum(torch.stack([loss_sum.cpu(), torch.tensor(float(seen), dtype=torch.float64)]), info)
    timing.samples = int(totals[1].item())
    return float(totals[0] / max(totals[1], 1)), rows


@torch.inference_mode()
def evaluate(net: nn.Module, loader, device: torch.device, outputs: int, loss_kind: str,
             info: dist.DistInfo) -> dict[str, float]:
    """Validation loss, mean accuracy (1 - MAE averaged over traits) and per-trait accuracy, over all ranks."""
    net.eval()
    abs_sum = torch.zeros(outputs, dtype=torch.float64)
    sq_sum = torch.zeros(outputs, dtype=torch.float64)
    n = 0
    for static, dynamic, y, _ in loader:
        with autocast(device):
            pred = net(static.to(device), dynamic.to(device))
        err = pred.float().cpu().double() - y.double()
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


# ---------------------------------------------------------------------------------------- MLflow run
class RunTracker:
    """Starts/ends the MLflow run of one ``fit`` (main rank only); a no-op when tracking is off."""

    def __init__(self, params: Params, enabled: bool):
        self.params = params
        self.enabled = enabled
        self.run_id: str | None = None
        self.experiment: str | None = None
        self.uri: str | None = None

    def start(self, *, experiment: str | None, run_name: str | None, tags: dict[str, str], nested: bool,
              resume_run_id: str | None) -> str | None:
        if not self.enabled:
            return None
        import mlflow

        from bigfive.training import tracking

        self.uri = tracking.configure(self.params.tracking)
        parent = mlflow.active_run()
        if experiment is None and parent is not None:
            exp_id = parent.info.experiment_id
            self.experiment = mlflow.MlflowClient().get_experiment(exp_id).name
        else:
            self.experiment = experiment or self.params.tracking.experiment
            exp_id = tracking.experiment_id(self.experiment, self.uri,
                                            tracking.experiment_description(self.experiment, self.params))
        system = self.params.tracking.system_metrics and _has_psutil()
        if system:
            mlflow.set_system_metrics_sampling_interval(self.params.tracking.system_metrics_interval)
            mlflow.set_system_metrics_samples_before_logging(1)
        run_id = resume_run_id if resume_run_id and _run_exists(resume_run_id) else None
        run = mlflow.start_run(run_id=run_id, experiment_id=None if run_id else exp_id,
                               run_name=None if run_id else run_name,
                               nested=nested or parent is not None, tags=tags, log_system_metrics=system)
        self.run_id = run.info.run_id
        log.info("MLflow run %s in experiment %r (%s)%s", self.run_id, self.experiment, self.uri,
                 " resumed" if run_id else "")
        link = tracking.ui_url(self.uri, run.info.experiment_id)
        if link and not nested and parent is None:  # one link per command, not one per trial
            log.info("compare the runs at %s", link)
        try:
            tracking.log_params(self.params)
        except Exception as err:  # resumed with changed params: MLflow refuses to overwrite values
            log.warning("MLflow params not (re)logged: %s", str(err).splitlines()[0])
        return self.run_id

    def log_dataset(self, data: TrainData, digest: str) -> None:
        """The features this run trains on, as its MLflow dataset input (name, DVC hash, split sizes)."""
        if self.run_id is None:
            return
        from bigfive.training import tracking

        folder = data.features_dir if data.features_dir is not None else Path(next(iter(data.files), ".")).parent
        source = str(Path(folder).resolve())  # direct entry: the folder of the arrays
        try:
            tracking.log_dataset(f"{self.params.data.source}-features", source, digest,
                                 tracking.split_sizes(data.features_dir, data.n_train, data.n_val))
        except Exception as err:  # a record for the UI, not a reason to stop training
            log.warning("MLflow dataset input not logged: %s", str(err).splitlines()[0])

    def end(self, status: str = "FINISHED") -> None:
        if not self.enabled or self.run_id is None:
            return
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id == self.run_id:
            mlflow.end_run(status=status)
        else:  # someone ended it already (or switched runs): set the terminal status directly
            mlflow.MlflowClient().set_terminated(self.run_id, status=status)


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        log.warning("psutil is not installed: MLflow system metrics are off")
        return False
    return True


def _run_exists(run_id: str) -> bool:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        return False
    return True


# ------------------------------------------------------------------------------------------------ fit
def fit(params: Params, *, features_dir: str | Path | None = None, output_dir: str | Path | None = None,
        experiment: str | None = None, run_name: str | None = None, tags: dict[str, Any] | None = None,
        nested: bool = False, register: bool = True, on_epoch: Callable[[int, dict], None] | None = None,
        resume: bool = False, init_from: str | None = None, data: TrainData | None = None,
        callbacks: list[Callback] | None = None) -> FitResult:
    """Train ``params.model`` on the train split of ``features_dir`` (early stopping on its val split).

    ``output_dir`` defaults to ``train.models_dir``; ``data`` replaces ``features_dir`` (direct entry);
    extra ``callbacks`` run after the built-in ones and before ``on_epoch``.
    """
    tc = params.train
    if data is None:
        data = from_features_dir(features_dir or params.preprocess.features_dir, to_dict(params.preprocess))
    out = Path(output_dir or tc.models_dir)
    outputs = params.model.outputs
    check_labels(data.train, outputs)
    check_labels(data.val, outputs)
    info = dist.setup(tc.device)
    device = resolve_device(tc.device)
    if info.enabled and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
    prev_deterministic = torch.are_deterministic_algorithms_enabled()
    if tc.deterministic and not prev_deterministic:
        # CUDA kernels may lack deterministic versions: warn there instead of failing
        _set_deterministic(True, warn_only=device.type == "cuda", compiled=tc.compile)
    tracker = RunTracker(params, params.tracking.enabled and info.is_main)
    try:
        return _fit(params, data, out, info, device, tracker, experiment=experiment, run_name=run_name,
                    tags=tags or {}, nested=nested, register=register, on_epoch=on_epoch, resume=resume,
                    init_from=init_from, extra_callbacks=callbacks or [])
    except BaseException as err:
        status = "KILLED" if isinstance(err, KeyboardInterrupt) or type(err).__name__ == "TrialPruned" else "FAILED"
        try:
            tracker.end(status)
        except Exception as end_err:  # never hide the original error behind a tracking one
            log.warning("could not end the MLflow run: %s", end_err)
        raise
    finally:
        if torch.are_deterministic_algorithms_enabled() != prev_deterministic:
            _set_deterministic(prev_deterministic, warn_only=False, compiled=tc.compile)
        dist.teardown(info)


def _fit(params: Params, data: TrainData, out: Path, info: dist.DistInfo, device: torch.device,
         tracker: RunTracker, *, experiment, run_name, tags, nested, register, on_epoch, resume, init_from,
         extra_callbacks) -> FitResult:
    tc = params.train
    outputs = params.model.outputs
    labels = list(ALL_LABELS[:outputs])
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)

    seed_everything(tc.seed)
    model = build_model(params.model, data.train.frames, data.train.flow_channels)
    last_path, best_path = out / "last.pt", out / "best.pt"
    resume_ckpt = load_checkpoint(last_path) if resume and last_path.is_file() else None
    if resume and resume_ckpt is None:
        log.warning("--resume: %s not found; starting from scratch", last_path)
    if init_from and resume_ckpt is None:
        warm_start(model, init_from)
    model.to(device)
    optimizer = make_optimizer(model, tc.lr, tc.weight_decay, tc.stream_lr_mult)

    train_ds = ClipDataset(data.train, data.train_indices, outputs, tc.hflip, tc.temporal_shuffle, tc.seed)
    val_ds = ClipDataset(data.val, data.val_indices, outputs)
    # training shards are cut to equal length so every rank runs the same number of DDP steps
    n_even = len(train_ds) - len(train_ds) % info.world
    train_sampler = EpochSampler(n_even, shuffle=True, seed=tc.seed, rank=info.rank, world=info.world)
    val_sampler = EpochSampler(len(val_ds), shuffle=False, rank=info.rank, world=info.world)
    pin = device.type == "cuda"
    train_loader = make_loader(train_ds, train_sampler, tc.batch_size, tc.num_workers, pin)
    val_loader = make_loader(val_ds, val_sampler, 2 * tc.batch_size, tc.num_workers, pin)
    steps_per_epoch = max(1, math.ceil(len(train_sampler) / tc.batch_size))
    scheduler = warmup_cosine(optimizer, tc.warmup_epochs * steps_per_epoch, tc.epochs * steps_per_epoch)

    state = TrainState(model=model, optimizer=optimizer, scheduler=scheduler, output_dir=out, epochs=tc.epochs,
                       monitor=MONITOR, is_main=info.is_main)
    run_id = None
    if resume_ckpt is not None:
        _restore(resume_ckpt, model, optimizer, scheduler, state, info, last_path)
        run_id = str(resume_ckpt.get("run_id") or "") or None
    else:
        torch.manual_seed(tc.seed + info.rank)  # per-rank dropout streams; the weights are rank 0's (DDP)

    train_net: nn.Module = model
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        train_net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    if tc.compile:
        train_net = torch.compile(train_net)
    eval_net = torch.compile(model) if tc.compile and info.enabled else (train_net if not info.enabled else model)

    files_hash = _features_tags(data)
    run_tags = {"git_commit": _git_commit(), **files_hash, "bigfive_version": __version__,
                **({"init_from": str(init_from)} if init_from else {}), **_description(params, data, files_hash),
                **{k: str(v) for k, v in tags.items()}}
    run_id = tracker.start(experiment=experiment, run_name=run_name or _default_run_name(params), tags=run_tags,
                           nested=nested, resume_run_id=run_id)
    tracker.log_dataset(data, files_hash["features_hash"])

    criterion = loss_fn(tc.loss)
    ckpt_extra = {"preprocess": data.meta, "labels": labels, "params": to_dict(params), "run_id": run_id or "",
                  "bigfive_version": __version__, "world_size": info.world}

    def build_checkpoint(s: TrainState) -> dict[str, Any]:
        rngs = dist.all_gather(rng_state(), info)
        return {**checkpoint_state(model), **ckpt_extra, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": s.epoch, "step": s.step, "rng": rngs[0],
                "rng_ranks": rngs, "history": s.history, "best_metric": s.best_metric,
                "best_epoch": s.best_epoch, "stopped": s.stop, "stop_reason": s.stop_reason}

    state.checkpoint = build_checkpoint
    cbs = CallbackList([StreamFreeze(tc.freeze_streams_epochs), Timer(), LRMonitor(), MetricTracker(tc.min_delta),
                        EarlyStopping(tc.patience),
                        Checkpointer(), MLflowLogger(tracker.run_id), ProgressLogger(), *extra_callbacks,
                        *([LambdaCallback(on_epoch)] if on_epoch else [])])
    ranks: dict[str, Any] = {"world": info.world}
    cbs.on_train_begin(state)
    start_epoch = state.epoch
    if state.stop:
        log.info("%s: the run already stopped (%s)", last_path, state.stop_reason)
    for epoch in range(start_epoch + 1, tc.epochs + 1):
        if state.stop:
            break
        state.epoch, state.metrics, state.timing, state.improved = epoch, {}, EpochTiming(), False
        train_sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        train_loader.generator.manual_seed(tc.seed * 1000 + epoch)  # worker seeds: same after a resume
        cbs.on_epoch_begin(state)
        train_loss, rows = train_epoch(train_net, train_loader, state, cbs, criterion, tc.grad_clip, device, info)
        if epoch == start_epoch + 1:
            ranks.update(_rank_report(rows, info))
        t0 = time.perf_counter()
        dist.broadcast_buffers(model, info)
        val = evaluate(eval_net, val_loader, device, outputs, tc.loss, info)
        state.timing.eval_s = time.perf_counter() - t0
        state.metrics.update({"train_loss": train_loss, **val})
        cbs.on_epoch_end(state)
    cbs.on_train_end(state)

    ctx = RunContext(device=str(device), num_workers=tc.num_workers, batch_size=tc.batch_size, compile=tc.compile,
                     world_size=info.world, train_clips=data.n_train, val_clips=data.n_val)
    report = analyse(state.history, ctx)
    result = FitResult(best_val_mean_accuracy=state.best_metric, best_epoch=state.best_epoch,
                       history=state.history, run_id=run_id, best_checkpoint=best_path, last_checkpoint=last_path,
                       analysis=report, output_dir=out, stopped_early=state.stop, ranks=ranks,
                       epochs_to_interaction=first_epoch_reaching(state.history, f"val_acc_{tc.interaction_trait}",
                                                                  tc.interaction_threshold))
    if info.is_main:
        _finish(params, data, result, tracker, register)
    dist.barrier(info)
    tracker.end("FINISHED")
    return result


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


def _git_commit() -> str:
    from bigfive.training.tracking import git_commit

    return git_commit()


def _default_run_name(params: Params) -> str:
    from bigfive.training.tracking import default_run_name

    return default_run_name(params)


def _description(params: Params, data: TrainData, files_hash: dict[str, str]) -> dict[str, str]:
    """The run's description tag (a caller's ``mlflow.note.content`` tag replaces it)."""
    from bigfive.training.tracking import NOTE_TAG, run_description

    return {NOTE_TAG: run_description(params, data.n_train, data.n_val, files_hash["features_hash"])}


def _features_tags(data: TrainData) -> dict[str, str]:
    from bigfive.training.tracking import features_hash

    value, source = features_hash(data.features_dir, data.files, data.meta)
    return {"features_hash": value, "features_hash_source": source}


def _finish(params: Params, data: TrainData, result: FitResult, tracker: RunTracker, register: bool) -> None:
    """Main rank: analysis files, MLflow artifacts, registration and the champion alias, run.json."""
    out = result.output_dir
    paths = write_report(result.analysis, out)
    print(to_markdown(result.analysis))
    run_info: dict[str, Any] = {"run_id": result.run_id, "experiment": tracker.experiment,
                                "tracking_uri": tracker.uri, "best_val_mean_accuracy": result.best_val_mean_accuracy,
                                "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                                "stopped_early": result.stopped_early, "registered_model": None,
                                "model_version": None, "champion_moved": False, "champion_version": None,
                                "ranks": result.ranks, "epochs_to_interaction": result.epochs_to_interaction}
    if tracker.run_id is not None:
        import mlflow

        for path in (*paths, out / "history.json"):
            mlflow.log_artifact(str(path))
        s = result.analysis["summary"]
        mlflow.log_metrics({"data_wait_share_mean": s["data_wait_share"],
                            "throughput_clips_s_mean": s["throughput_clips_s"], "epochs_run": len(result.history),
                            **({"epochs_to_interaction": result.epochs_to_interaction}
                               if result.epochs_to_interaction is not None else {})})
        # a metric cannot be null: "never" is a tag, so the run table can still show and filter it
        mlflow.set_tag("epochs_to_interaction", str(result.epochs_to_interaction or "never"))
        if register:
            from bigfive.training.pyfunc import log_pyfunc
            from bigfive.training.tracking import promote_champion

            name = params.tracking.registered_model
            best = load_checkpoint(result.best_checkpoint)
            row = int(data.val_indices[0])
            example = (np.asarray(data.val.static[row:row + 1]), np.asarray(data.val.dynamic[row:row + 1]))
            info = log_pyfunc(best, example, registered_model_name=name)
            version = str(info.registered_model_version)
            moved, holder = promote_champion(name, version, result.best_val_mean_accuracy,
                                             params.tracking.champion_alias)
            mlflow.set_tags({"registered_model": name, "model_version": version, "champion": str(moved)})
            result.model_version, result.champion_moved = version, moved
            run_info.update({"registered_model": name, "model_version": version, "champion_moved": moved,
                             "champion_version": holder, "model_uri": info.model_uri})
    write_json(out / "run.json", run_info)
