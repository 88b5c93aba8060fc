"""The MLflow run of one ``fit``: start (or resume) it, tag and describe it, log its outcome, end it.

Main rank only; every method is a no-op when tracking is off, so the loop never asks whether
MLflow is on. MLflow is imported lazily (``bigfive.training.tracking`` does not import it at module
level either), so ``import bigfive.training.loop`` stays light.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from bigfive import __version__
from bigfive.config import Params
from bigfive.training import tracking
from bigfive.training.data import TrainData

log = logging.getLogger("bigfive.training")


def run_tags(params: Params, data: TrainData, features: dict[str, str], init_from: str | None,
             extra: dict[str, Any]) -> dict[str, str]:
    """The run's tags: code and data identity, warm start, description; a caller's ``extra`` wins."""
    description = tracking.run_description(params, data.n_train, data.n_val, features["features_hash"])
    return {"git_commit": tracking.git_commit(), **features, "bigfive_version": __version__,
            **({"init_from": str(init_from)} if init_from else {}), tracking.NOTE_TAG: description,
            **{k: str(v) for k, v in extra.items()}}


def features_tags(data: TrainData) -> dict[str, str]:
    """``features_hash`` (DVC's md5 of the features, else a fingerprint) and where it came from."""
    value, source = tracking.features_hash(data.features_dir, data.files, data.meta)
    return {"features_hash": value, "features_hash_source": source}


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
        folder = data.features_dir if data.features_dir is not None else Path(next(iter(data.files), ".")).parent
        source = str(Path(folder).resolve())  # direct entry: the folder of the arrays
        try:
            tracking.log_dataset(f"{self.params.data.source}-features", source, digest,
                                 tracking.split_sizes(data.features_dir, data.n_train, data.n_val))
        except Exception as err:  # a record for the UI, not a reason to stop training
            log.warning("MLflow dataset input not logged: %s", str(err).splitlines()[0])

    def log_outcome(self, analysis: dict[str, Any], epochs_run: int, epochs_to_interaction: int | None,
                    files: list[Path]) -> None:
        """The analysis files and the run's summary numbers, once training is over."""
        if self.run_id is None:
            return
        import mlflow

        for path in files:
            mlflow.log_artifact(str(path))
        s = analysis["summary"]
        mlflow.log_metrics({"data_wait_share_mean": s["data_wait_share"],
                            "throughput_clips_s_mean": s["throughput_clips_s"], "epochs_run": epochs_run,
                            **({"epochs_to_interaction": epochs_to_interaction}
                               if epochs_to_interaction is not None else {})})
        # a metric cannot be null: "never" is a tag, so the run table can still show and filter it
        mlflow.set_tag("epochs_to_interaction", str(epochs_to_interaction or "never"))

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
