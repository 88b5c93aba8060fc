"""Where the evaluation is recorded besides results/: the model card, and (tracking on) the training run in
MLflow (metrics, figures, files) and the registered version's description.

The run is the one the trainer wrote into models/run.json (else the checkpoint's own record); a store or
run that cannot be found is a warning, never an error: the evaluation's files are already written.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bigfive.evaluation.result import EvalResult

log = logging.getLogger("bigfive.evaluate")

CARD_FILE = "model_card.md"
RUN_INFO_KEYS = ("run_id", "tracking_uri", "registered_model", "model_version")


def mlflow_metrics(results: dict[str, EvalResult], noise_floor: float | None) -> dict[str, float]:
    """Flat metric names for the training run. Validation figures get an ``eval_`` prefix so they do not
    extend the per-epoch ``val_*`` series the trainer logged."""
    out: dict[str, float] = {}
    for split, res in results.items():
        prefix = "test" if split == "test" else f"eval_{split}"
        m = res.metrics
        for key in ("mean_accuracy", "mae", "rmse", "r2", "pcc", "ccc", "mean_accuracy_ci95_low",
                    "mean_accuracy_ci95_high"):
            if key in m:
                out[f"{prefix}_{key}"] = m[key]
        for trait, tm in m["traits"].items():
            for key in ("accuracy", "pcc", "ccc"):
                out[f"{prefix}_{trait}_{key}"] = tm[key]
        if "baseline_mean_accuracy" in m:
            name = "baseline_mean_accuracy" if split == "test" else f"{prefix}_baseline_mean_accuracy"
            out[name] = m["baseline_mean_accuracy"]
    if noise_floor is not None:
        out["noise_floor_mean_accuracy"] = noise_floor
    return {k: float(v) for k, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def find_run(uri: str, run_id: str) -> Any | None:
    """The training run (an ``mlflow.entities.Run``), or None with a warning when it cannot be found."""
    from bigfive.training.tracking import sqlite_file

    db = sqlite_file(uri)
    if db is not None and not db.is_file():  # connecting would create an empty store as a side effect
        log.warning("MLflow store %s does not exist: evaluation not logged to run %s", uri, run_id)
        return None
    from mlflow.tracking import MlflowClient

    try:
        return MlflowClient(uri).get_run(run_id)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        log.warning("MLflow run %s not found in %s (%s): evaluation not logged", run_id, uri, first)
        return None


def log_to_mlflow(uri: str, run_id: str, metrics: dict[str, float], artifacts: Sequence[Path],
                  plots_dir: Path) -> bool:
    """Add the evaluation to the training run; warn and skip when that run cannot be found."""
    if find_run(uri, run_id) is None:
        return False
    _log_evaluation(uri, run_id, metrics, artifacts, plots_dir)
    return True


def _log_evaluation(uri: str, run_id: str, metrics: dict[str, float], artifacts: Sequence[Path],
                   plots_dir: Path) -> None:
    """Metrics, files and figures into run ``run_id``, which the caller has found."""
    import mlflow

    from bigfive.training.tracking import use_store

    use_store(uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        mlflow.log_metrics(metrics)
        if plots_dir.is_dir():
            mlflow.log_artifacts(str(plots_dir), artifact_path="plots")
        for path in artifacts:
            mlflow.log_artifact(str(path), artifact_path="evaluation")
    log.info("logged %d metrics and the figures to MLflow run %s", len(metrics), run_id)


def _read_run_info(path: Path) -> dict[str, Any]:
    """models/run.json (run_id, tracking_uri, ...) or {} when absent or unreadable."""
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        log.warning("%s: not valid JSON (%s)", path, err)
        return {}
    if not isinstance(info, dict):
        log.warning("%s: expected an object", path)
        return {}
    return {k: v for k, v in info.items() if k in RUN_INFO_KEYS and isinstance(v, str) and v}


def record(params: Any, results: dict[str, EvalResult], *, tracking: bool, checkpoint: Path,
           ckpt: dict[str, Any], results_dir: Path, plots_dir: Path, noise_floor: float | None,
           meta: dict[str, Any] | None) -> None:
    """The model card, then (``tracking`` on) the metrics, figures and card in the training run and the card
    as the registered version's description."""
    run_info = _read_run_info(checkpoint.parent / "run.json")
    run_id = run_info.get("run_id") or ckpt.get("run_id") or None  # run.json, else the checkpoint's record
    run = uri = None
    if not tracking:
        log.info("MLflow logging off")
    elif not isinstance(run_id, str):
        log.warning("neither %s nor the checkpoint names an MLflow run: evaluation not logged to MLflow",
                    checkpoint.parent / "run.json")
    else:
        from bigfive.training.tracking import resolve_tracking_uri

        uri = run_info.get("tracking_uri") or resolve_tracking_uri(params.tracking)  # where the trainer logged the run
        run = find_run(uri, run_id)
    card = _write_card(results_dir, params, results, noise_floor=noise_floor, meta=meta, checkpoint=checkpoint,
                      run_info={**run_info, "run_id": run_id if isinstance(run_id, str) else None},
                      tags=dict(run.data.tags) if run else {})
    if run is None or uri is None:
        return
    artifacts = [results_dir / "metrics.json", results_dir / CARD_FILE,
                 *(results_dir / f"predictions_{s}.csv" for s in results)]
    _log_evaluation(uri, run_id, mlflow_metrics(results, noise_floor), artifacts, plots_dir)  # run found above
    _publish_card(uri, run_id, run_info, card)


def _write_card(results_dir: Path, params: Any, results: dict[str, EvalResult], **facts: Any) -> str:
    """results/model_card.md from the measured values; returns its text."""
    from bigfive.evaluation import model_card
    from bigfive.utils.io import write_text

    card = model_card.render(model_card.card_facts(params, results, **facts))
    write_text(results_dir / CARD_FILE, card)
    log.info("model card: %s", results_dir / CARD_FILE)
    return card


def _publish_card(uri: str, run_id: str, run_info: dict[str, Any], card: str) -> None:
    """The card as the registered version's description: what the MLflow registry page shows."""
    from mlflow.tracking import MlflowClient

    from bigfive.evaluation import model_card

    # registry_uri too: without it the client uses a registry set process-wide earlier (mlflow.set_registry_uri)
    client = MlflowClient(uri, registry_uri=uri)
    model_card.publish(client, run_id, run_info, card, f"evaluation/{CARD_FILE}")
