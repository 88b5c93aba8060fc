"""One ablation run: what it is (:class:`RunSpec`: variant, seed, features, folder) and doing it (:func:`execute`).

The layer under both ways of running ablations: ``bigfive ablate`` (:mod:`bigfive.ablation.run`, one DVC matrix
stage) and ``bigfive ablate --all --jobs N`` (:mod:`bigfive.ablation.parallel`); :mod:`bigfive.ablation.compare`
reads the files a run writes (:data:`METRICS_FILE`, :data:`PREDICTIONS_FILE`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigfive.config import ConfigError, Params, replace, to_dict
from bigfive.config.ablation import preprocess_name

log = logging.getLogger("bigfive.ablation")

METRICS_FILE = "metrics.json"
PREDICTIONS_FILE = "predictions_test.csv"
ERRORS_FILE = "abs_errors_test.npy"
_NOT_REPORTED = object()  # FitResult without epochs_to_interaction (older training loop)
# What a checkpoint needs for evaluation and inspection; optimizer and RNG state (2/3 of best.pt) are dropped.
_CHECKPOINT_KEEP = ("model", "model_config", "frames", "flow_channels", "preprocess", "labels", "params", "run_id",
                    "epoch", "best_metric", "best_epoch", "bigfive_version")


@dataclass(frozen=True)
class RunSpec:
    """One run of an ablation: which model, on which features, recorded where and under which name."""

    name: str  # the row of the comparison (variant, or t<T>_<method> for preprocessing)
    model_variant: str  # key of ablation.variants
    seed: int
    features_dir: Path
    out_dir: Path
    experiment: str
    study: str  # "model" or "preprocess": the MLflow tag telling the two ablations apart
    epochs: int


def run_dir(results_dir: str | Path, name: str, seed: int) -> Path:
    return Path(results_dir) / "runs" / name / f"seed{seed}"


def preprocess_params(params: Params, frames: int, method: str) -> Params:
    """``params`` with T, the flow method and the preprocessing folders of one ablation_flow variant."""
    root = Path(params.ablation.flow.data_dir)
    name = preprocess_name(frames, method)
    return replace(params, {"preprocess.frames": frames, "preprocess.flow.method": method,
                            "preprocess.faces_dir": str(root / f"t{frames}" / "faces"),
                            "preprocess.flow_dir": str(root / name / "flow"),
                            "preprocess.features_dir": str(root / name / "features")})


def model_spec(params: Params, variant: str, seed: int, *, features_dir: str | Path | None = None,
               out_dir: str | Path | None = None, epochs: int | None = None) -> RunSpec:
    cfg = params.ablation
    if variant not in cfg.variants:
        raise ConfigError("--variant", f"{variant!r} is not in ablation.variants ({', '.join(cfg.variants)})")
    return RunSpec(name=variant, model_variant=variant, seed=seed,
                   features_dir=Path(features_dir or params.preprocess.features_dir),
                   out_dir=Path(out_dir or run_dir(cfg.results_dir, variant, seed)), experiment=cfg.experiment,
                   study="model", epochs=epochs or cfg.epochs)


def preprocess_spec(params: Params, frames: int, method: str, seed: int, *, out_dir: str | Path | None = None,
                    epochs: int | None = None) -> RunSpec:
    flow = params.ablation.flow
    name = preprocess_name(frames, method)
    pp = preprocess_params(params, frames, method)
    return RunSpec(name=name, model_variant=flow.variant, seed=seed, features_dir=Path(pp.preprocess.features_dir),
                   out_dir=Path(out_dir or run_dir(flow.results_dir, name, seed)), experiment=flow.experiment,
                   study="preprocess", epochs=epochs or flow.epochs or params.ablation.epochs)


def execute(params: Params, spec: RunSpec, *, tracking: bool = True) -> dict[str, Any]:
    """Train and evaluate ``spec`` (or record it as a duplicate); returns what metrics.json holds.

    The run folder appears atomically: complete, or not at all.
    """
    from bigfive.ablation.variants import canonical, run_params
    from bigfive.utils.io import atomic_dir, write_json

    cfg = params.ablation
    overrides = cfg.variants[spec.model_variant]
    first = canonical(params, cfg.variants, spec.model_variant, spec.epochs) if spec.study == "model" else spec.name
    record: dict[str, Any] = {"variant": spec.name, "model_variant": spec.model_variant, "seed": spec.seed,
                              "study": spec.study, "overrides": overrides, "same_as": None}
    if first != spec.name:
        record["same_as"] = first
        log.info("%s trains exactly what %s trains (same model and training settings): not trained again; "
                 "the comparison reports %s's runs for it", spec.name, first, first)
        with atomic_dir(spec.out_dir) as tmp:
            write_json(tmp / METRICS_FILE, record)
        return record

    run = run_params(params, overrides, seed=spec.seed, epochs=spec.epochs)
    if not tracking:
        run = replace(run, {"tracking.enabled": False})
    log.info("ablation %s seed %d: fusion=%s direction=%s heads=%d time_bias=%s, %d epochs on %s",
             spec.name, spec.seed, run.model.fusion, run.model.direction, run.model.heads, run.model.time_bias,
             run.train.epochs, spec.features_dir)
    with atomic_dir(spec.out_dir) as tmp:
        record.update(_train_and_evaluate(run, spec, tmp))
        write_json(tmp / METRICS_FILE, record)
    if record["run_id"] and run.tracking.enabled:  # last step: from here on the shared store counts it as done
        from bigfive.ablation.ledger import mark_complete
        from bigfive.training.tracking import resolve_tracking_uri

        mark_complete(resolve_tracking_uri(run.tracking), record["run_id"], spec.out_dir,
                      [METRICS_FILE, PREDICTIONS_FILE, ERRORS_FILE])
    test = record["test"]
    log.info("%s seed %d: test mean accuracy %.4f (train-mean baseline %s), %d epochs in %.0f s", spec.name,
             spec.seed, test["mean_accuracy"],
             f"{test['baseline_mean_accuracy']:.4f}" if "baseline_mean_accuracy" in test else "n/a",
             record["epochs_run"], record["train_seconds"])
    return record


def _train_and_evaluate(run: Params, spec: RunSpec, out: Path) -> dict[str, Any]:
    from bigfive.ablation.ledger import run_tags
    from bigfive.evaluation import evaluate_checkpoint
    from bigfive.evaluation.records import log_to_mlflow, mlflow_metrics
    from bigfive.evaluation.tables import predictions_csv
    from bigfive.training import fit
    from bigfive.training.tracking import resolve_tracking_uri
    from bigfive.utils.io import save_npy, write_text

    tags = {"variant": spec.name, "seed": str(spec.seed), "ablation": spec.study,
            "model_variant": spec.model_variant, **run_tags(run)}
    t0 = time.perf_counter()
    result = fit(run, features_dir=spec.features_dir, output_dir=out / "model", experiment=spec.experiment,
                 run_name=f"{spec.name}-seed{spec.seed}", tags=tags, register=False)
    seconds = time.perf_counter() - t0
    _slim_checkpoint(result.best_checkpoint)
    result.last_checkpoint.unlink(missing_ok=True)  # resume state only; DVC re-runs a stage from scratch
    ev = evaluate_checkpoint(result.best_checkpoint, spec.features_dir, "test", device=run.evaluate.device,
                             batch_size=run.evaluate.batch_size)
    write_text(out / PREDICTIONS_FILE, predictions_csv(ev))
    save_npy(out / ERRORS_FILE, ev.abs_errors)
    if result.run_id and run.tracking.enabled:
        log_to_mlflow(resolve_tracking_uri(run.tracking), result.run_id, mlflow_metrics({"test": ev}, None),
                      [out / PREDICTIONS_FILE], out / "no-plots")
    record = {"run_id": result.run_id, "experiment": spec.experiment, "features_dir": str(spec.features_dir),
              "epochs": run.train.epochs, "epochs_run": len(result.history), "best_epoch": result.best_epoch,
              "best_val_mean_accuracy": result.best_val_mean_accuracy,
              "val": best_val_row(result.history, result.best_epoch), "train_seconds": round(seconds, 2),
              "model": to_dict(run.model), "test": ev.metrics}
    record.update(interaction_record(result))
    return record


def interaction_record(result: Any) -> dict[str, int | None]:
    """``{"epochs_to_interaction": first epoch whose validation accuracy on the interaction trait reached the
    threshold, or None: never}`` from a FitResult; empty where the training loop does not report it, so the
    comparison can tell "never reached" from "not recorded"."""
    reached = getattr(result, "epochs_to_interaction", _NOT_REPORTED)
    if reached is _NOT_REPORTED:
        return {}
    return {"epochs_to_interaction": None if reached is None else int(reached)}


def best_val_row(history: list[dict[str, float]], best_epoch: int) -> dict[str, float]:
    """Per-trait validation accuracy at the best epoch (``{"openness": 0.97, ...}``) from the history rows.

    A history row is ``{"epoch": e, "val_mean_accuracy": ..., "val_acc_<trait>": ..., ...}``
    (bigfive.training.callbacks.MetricTracker); the row is matched on its ``epoch``, else taken by position.
    """
    row = next((h for h in history if h.get("epoch") == best_epoch), None)
    if row is None and 1 <= best_epoch <= len(history):
        row = history[best_epoch - 1]
    prefix = "val_acc_"
    return {k[len(prefix):]: float(v) for k, v in (row or {}).items() if k.startswith(prefix)}


def _slim_checkpoint(path: Path) -> None:
    import torch

    from bigfive.models import load_checkpoint
    from bigfive.utils.io import atomic_path

    ckpt = load_checkpoint(path)
    with atomic_path(path) as tmp:
        torch.save({k: v for k, v in ckpt.items() if k in _CHECKPOINT_KEEP}, tmp)


def run_preprocess_stage(params: Params, stage: str, frames: int, method: str | None) -> int:
    """One preprocessing stage of an ablation_flow variant, with the main stages' own code."""
    if stage == "faces":
        from bigfive.preprocess.faces import run_faces_stage

        # faces depend on T only: any method's folders share them
        return run_faces_stage(preprocess_params(params, frames, method or params.preprocess.flow.method))
    if method is None:
        raise ConfigError("--flow-method", f"--stage {stage} needs --flow-method")
    pp = preprocess_params(params, frames, method)
    if stage == "flow":
        from bigfive.preprocess.flow import run_flow_stage

        return run_flow_stage(pp)
    from bigfive.preprocess.features import run_features_stage

    return run_features_stage(pp)
