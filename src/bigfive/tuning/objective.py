"""One trial: suggest params, train with per-epoch pruning, and leave a trace whatever happens.

After every validation epoch the trial reports ``val_mean_accuracy`` at step = epoch (1-based): the
pruner decides on these values and optuna-dashboard draws them as learning curves. The last epoch of
the budget is reported but never pruned (the trial has run in full; it is complete). While it runs,
the trial keeps as user attributes ``best_epoch`` and ``val_acc_<trait>`` of its best epoch so far,
and, when it completes, ``epochs_to_interaction`` from the training result.

Every way a trial can end is recorded on the trial (user attributes) and on its MLflow run:
- complete: the value is the best validation mean accuracy over its epochs;
- pruned by the pruner at an epoch, or because the suggested combination is invalid
  (``prune_reason``; TPE then learns to avoid it, which it would not for a failed trial);
- failed by an exception (``fail_reason`` = the exception; the study goes on with the next trial)
  or by Ctrl-C (``fail_reason`` = interrupted; the KeyboardInterrupt is re-raised to stop the worker).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from bigfive.config import Params, TuneConfig
from bigfive.tuning.space import InvalidTrialParams, suggest, trial_params
from bigfive.tuning.study import (
    BEST_EPOCH_ATTR,
    FAIL_ATTR,
    INTERACTION_ATTR,
    METRIC,
    PRUNE_ATTR,
    RUN_ATTR,
    TRAIT_ATTR_PREFIX,
    WORKER_ATTR,
    worker_id,
)

log = logging.getLogger(__name__)

STATE_TAG = "optuna.state"
__all__ = ["METRIC", "Objective", "trial_epochs", "trial_overrides"]


def trial_epochs(cfg: TuneConfig, base: Params) -> int:
    """The epochs of a trial that is never pruned: ``tune.epochs``, or ``train.epochs`` when it is null."""
    return cfg.epochs if cfg.epochs is not None else base.train.epochs


def trial_overrides(cfg: TuneConfig, base: Params) -> dict[str, Any]:
    """Settings every trial shares: the epoch budget (warm-up and stream freezing shortened to fit inside it)."""
    epochs = trial_epochs(cfg, base)
    out: dict[str, Any] = {"train.epochs": epochs,
                           "train.warmup_epochs": min(base.train.warmup_epochs, epochs - 1)}
    freeze = getattr(base.train, "freeze_streams_epochs", None)
    if freeze is not None and freeze >= epochs:
        out["train.freeze_streams_epochs"] = epochs - 1
    return out


@dataclass
class Objective:
    """The Optuna objective; ``fit`` is :func:`bigfive.training.fit` (injected so tuning stays importable)."""

    base: Params
    cfg: TuneConfig
    features_dir: Path
    fit: Callable[..., Any]
    tracking: bool = True  # MLflow on: each trial is a nested run under the worker's active parent run
    worker: str = field(default_factory=worker_id)

    def __call__(self, trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, self.worker)  # first, so a dead worker's trial can be found
        started = time.monotonic()
        epoch = -1
        best: float | None = None
        try:
            searched = suggest(trial, self.cfg.space, self.base)
            budget = trial_epochs(self.cfg, self.base)
            params = trial_params(self.base, {**trial_overrides(self.cfg, self.base), **searched})
            min_delta = params.train.min_delta

            def on_epoch(ep: int, metrics: dict[str, float]) -> None:
                nonlocal epoch, best
                epoch = ep
                self._remember_run(trial)
                value = float(metrics[METRIC])
                trial.report(value, ep)  # every epoch: the pruner's input and the dashboard's learning curve
                if best is None or value > best + min_delta:  # the same rule as fit's best epoch
                    best = value
                    _record_best_epoch(trial, ep, metrics)
                # the last epoch is never pruned: the trial has run its budget, stopping it saves nothing
                if ep < budget and trial.should_prune():
                    raise optuna.TrialPruned(f"epoch {ep}: {METRIC} {value:.4f} is below the pruner's threshold")

            with tempfile.TemporaryDirectory(prefix=f"bigfive-tune-{trial.number}-") as out:
                result = self.fit(params, features_dir=self.features_dir, output_dir=Path(out),
                                  experiment=self.cfg.experiment if self.tracking else None,
                                  run_name=f"trial-{trial.number}", tags=self._tags(trial),
                                  nested=self.tracking, register=False, on_epoch=on_epoch)
            value = float(result.best_val_mean_accuracy)
            if getattr(result, "run_id", None):
                trial.set_user_attr(RUN_ATTR, result.run_id)
            row = _history_row(result, getattr(result, "best_epoch", None))
            if row is not None and int(row["epoch"]) != trial.user_attrs.get(BEST_EPOCH_ATTR):
                _record_best_epoch(trial, int(row["epoch"]), row)  # fit's own best epoch is authoritative
            if hasattr(result, INTERACTION_ATTR):  # None: the interaction trait never reached the threshold
                trial.set_user_attr(INTERACTION_ATTR, getattr(result, INTERACTION_ATTR))
            self._finish_run(trial, "COMPLETE", {"trial_value": value})
            return value
        except InvalidTrialParams as err:
            trial.set_user_attr(PRUNE_ATTR, str(err.error))
            self._invalid_run(trial, err)
            raise optuna.TrialPruned(str(err)) from None
        except optuna.TrialPruned as err:
            trial.set_user_attr(PRUNE_ATTR, str(err))
            self._finish_run(trial, "PRUNED", {"pruned_at_epoch": epoch})
            raise
        except KeyboardInterrupt:
            self._fail(trial, f"interrupted (KeyboardInterrupt) after epoch {epoch}"
                       f" ({time.monotonic() - started:.0f} s into the trial)")
            raise
        except Exception as err:
            self._fail(trial, f"{type(err).__name__}: {err}")
            raise

    def _tags(self, trial: optuna.Trial) -> dict[str, str]:
        return {"optuna.study": trial.study.study_name, "optuna.trial": str(trial.number), "tune.worker": self.worker}

    def _remember_run(self, trial: optuna.Trial) -> None:
        """The trial's MLflow run id, as soon as its first epoch ends (pruned trials have one too)."""
        if not self.tracking or RUN_ATTR in trial.user_attrs:
            return
        import mlflow

        run = mlflow.active_run()
        if run is not None:
            trial.set_user_attr(RUN_ATTR, run.info.run_id)

    def _fail(self, trial: optuna.Trial, reason: str) -> None:
        log.error("trial %d failed: %s", trial.number, reason)
        try:
            trial.set_user_attr(FAIL_ATTR, reason[:2000])
        except Exception:  # the storage itself may be what failed; Optuna still marks the trial FAIL
            log.exception("could not record the failure reason of trial %d", trial.number)
        self._finish_run(trial, "FAIL", {}, reason=reason)

    def _finish_run(self, trial: optuna.Trial, state: str, metrics: dict[str, float],
                    reason: str | None = None) -> None:
        """Tag the (already closed) MLflow run of the trial with how the trial ended."""
        if not self.tracking:
            return
        try:
            import mlflow

            client = mlflow.MlflowClient()
            run_id = trial.user_attrs.get(RUN_ATTR) or self._find_run(client, trial)
            if not run_id:
                return
            client.set_tag(run_id, STATE_TAG, state)
            if reason:
                client.set_tag(run_id, "optuna.fail_reason", reason[:5000])
            for key, value in metrics.items():
                client.log_metric(run_id, key, value)
        except Exception:  # tracking is a record, not a reason to lose the trial
            log.exception("could not tag the MLflow run of trial %d", trial.number)

    def _find_run(self, client: Any, trial: optuna.Trial) -> str | None:
        """The run fit opened for ``trial`` when it failed before its first epoch ended."""
        exp = client.get_experiment_by_name(self.cfg.experiment)
        if exp is None:
            return None
        tags = self._tags(trial)
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = client.search_runs([exp.experiment_id], filter_string=query, max_results=1)
        if not runs:
            return None
        trial.set_user_attr(RUN_ATTR, runs[0].info.run_id)
        return runs[0].info.run_id

    def _invalid_run(self, trial: optuna.Trial, err: InvalidTrialParams) -> None:
        """An invalid combination never reaches fit; a short run still records what was tried."""
        if not self.tracking:
            return
        import mlflow

        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True, tags=self._tags(trial)) as run:
            mlflow.log_params({k: str(v) for k, v in err.overrides.items()})
            mlflow.set_tags({STATE_TAG: "PRUNED", "optuna.prune_reason": str(err.error)[:5000]})
        trial.set_user_attr(RUN_ATTR, run.info.run_id)


def _record_best_epoch(trial: optuna.Trial, epoch: int, metrics: dict[str, Any]) -> None:
    """``best_epoch`` and the per-trait validation accuracies of that epoch, as trial user attributes."""
    trial.set_user_attr(BEST_EPOCH_ATTR, int(epoch))
    for key, value in metrics.items():
        if key.startswith(TRAIT_ATTR_PREFIX):
            trial.set_user_attr(key, float(value))


def _history_row(result: Any, epoch: int | None) -> dict[str, Any] | None:
    """The history row of ``epoch`` in a training result (None when it has no such row)."""
    if epoch is None:
        return None
    return next((row for row in getattr(result, "history", None) or [] if int(row.get("epoch", -1)) == epoch),
                None)
