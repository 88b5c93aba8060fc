"""Which ablation runs are done, decided from the MLflow tracking server every machine logs to.

A run folder on one machine says nothing about the others, so ``bigfive ablate --all`` (``--jobs N`` or
``--slurm``) asks the shared store instead. A run counts as done only when its MLflow run carries
:data:`COMPLETE_TAG`, which :func:`mark_complete` sets as the very last step, after the run folder's files
are logged as artifacts: a job killed at any earlier point (time limit, preemption, ``scancel``) leaves a
run without it, which the next submission runs again.

Runs are matched on :func:`run_key`, a hash of the model and training settings the run trains with (seed
included), so a changed ``params.yaml`` makes its runs pending again, as ``dvc repro`` would.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bigfive.config import Params, to_dict

log = logging.getLogger("bigfive.ablation")

COMPLETE_TAG = "ablation_complete"  # "true": metrics, predictions and errors are logged; the run is done
KEY_TAG = "ablation_key"  # run_key of the settings the run trained with
JOB_TAG = "slurm_job"  # <array job>_<task> of the Slurm job that ran it (absent outside Slurm)
ARTIFACT_DIR = "ablation"  # the run folder's files, as `bigfive ablate` wrote them


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    variant: str
    seed: int
    key: str
    status: str  # MLflow's RUNNING / FINISHED / FAILED / KILLED
    complete: bool
    job: str | None


def run_key(run: Params) -> str:
    """Identity of one run: its model and train sections (the seed is train.seed), hashed."""
    blob = json.dumps({"model": to_dict(run.model), "train": to_dict(run.train)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_tags(run: Params) -> dict[str, str]:
    """Tags :func:`tracked_runs` matches on, added to the training run when it starts."""
    tags = {KEY_TAG: run_key(run)}
    job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if job and task:
        tags[JOB_TAG] = f"{job}_{task}"
    return tags


def mark_complete(uri: str, run_id: str, folder: Path, files: list[str]) -> None:
    """Log the run folder's ``files`` to the run, then tag it complete: the tag is the commit point."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for name in files:
        if (folder / name).is_file():
            client.log_artifact(run_id, str(folder / name), artifact_path=ARTIFACT_DIR)
    client.set_tag(run_id, COMPLETE_TAG, "true")


def tracked_runs(uri: str, experiment: str, study: str = "model") -> list[TrackedRun]:
    """Every run of ``experiment`` that ``bigfive ablate`` started for ``study``, complete or not."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    out, token = [], None
    while True:
        page = client.search_runs([exp.experiment_id], filter_string=f"tags.ablation = '{study}'",
                                  max_results=1000, page_token=token)
        out += [_tracked(r) for r in page if r.data.tags.get(KEY_TAG)]
        token = page.token
        if not token:
            return out


def _tracked(r: Any) -> TrackedRun:
    tags = r.data.tags
    return TrackedRun(run_id=r.info.run_id, variant=tags.get("variant", ""), seed=int(tags.get("seed", -1)),
                      key=tags[KEY_TAG], status=r.info.status, complete=tags.get(COMPLETE_TAG) == "true",
                      job=tags.get(JOB_TAG))


def completed(runs: list[TrackedRun]) -> dict[str, TrackedRun]:
    """run key -> its complete run (the latest one where a race let two finish: MLflow lists newest first)."""
    out: dict[str, TrackedRun] = {}
    for r in runs:
        if r.complete:
            if r.key in out:
                log.warning("%s seed %d was completed twice (MLflow runs %s and %s): using the first, the latest",
                            r.variant, r.seed, out[r.key].run_id, r.run_id)
            out.setdefault(r.key, r)
    return out


def mark_abandoned(uri: str, runs: list[TrackedRun], live_jobs: set[str]) -> list[TrackedRun]:
    """Slurm runs that never completed and whose job is gone (killed, timed out, preempted).

    Each is reported once and set to KILLED in MLflow (the UI showed it RUNNING, or FINISHED after training
    but before evaluation); the run itself is pending again.
    """
    from mlflow.tracking import MlflowClient

    done = {r.key for r in runs if r.complete}
    # FAILED / KILLED ones were reported (and set KILLED) by an earlier submission
    gone = [r for r in runs if not r.complete and r.job and r.job not in live_jobs and r.key not in done
            and r.status in ("RUNNING", "FINISHED")]
    for r in gone:
        log.warning("%s seed %d: Slurm job %s ended without finishing the run (MLflow run %s, %s): not done, "
                    "submitted again", r.variant, r.seed, r.job, r.run_id, r.status)
        MlflowClient(uri).set_terminated(r.run_id, status="KILLED")
    return gone
